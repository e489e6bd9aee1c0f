"""A custom projection kept by another process ends as a rebuild gives it after a forget,
wherever that process's catch-ups fall among the forget's steps (hypothesis, SQLite and
PostgreSQL).

The statement: for random traffic of a few users (devices of their own and shared ones,
emails that name each other, explicit merges; either anonymous-merge policy) recorded by an
appending-only writer, a follower keeping a custom projection of every Change (which person
each event applied to, which merges it caused) catches up before the forget, between its
decision and its purge (or the rebuild replacing the purge), and after; its projection, built
before the forget or rebuilt in between, stands right before the decision until the purge
has landed, and then equals what ``ws.rebuild([name])`` gives.

Its twin for an unmerge: for the same traffic, one of the merges it made (explicit, or an
anonymous person's merge on identify) is undone by the writer; the follower catches up
between the ``MergeUndone`` decision and the writer's replay of the identity rows, stands
right before the decision, and after the replay its projection equals a rebuild's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from idstitch.domain.events import DECISIONS_STREAM, DeviceEvent, MergeUndone, PersonForgotten

import idstitch
from idstitch.errors import IdstitchError
from idstitch.service import erasure
from idstitch.service.following import Follower
from idstitch.testing import FrozenClock
from idstitch.testing_projections import ChangeLog
from idstitch.workspace import Workspace

T0 = datetime(2026, 1, 1, 9, tzinfo=UTC)
USERS = ("ann", "bob", "cyd")

device = st.one_of(
    st.tuples(st.sampled_from(USERS), st.integers(0, 1)).map(lambda t: f"{t[0]}-dev{t[1]}"),
    st.sampled_from(("shared-0", "shared-1")),
)
step = st.one_of(
    st.tuples(st.just("identify"), st.sampled_from(USERS), device,
              st.sampled_from((*USERS, "own"))),
    st.tuples(st.just("set"), device, st.sampled_from(("a", "b"))),
    st.tuples(st.just("clear"), device),
    st.tuples(st.just("merge"), st.sampled_from(USERS), st.sampled_from(USERS)),
)


def play(ws: Workspace, script: list[tuple[Any, ...]], follow: Callable[[], object]) -> None:
    for i, (op, *args) in enumerate(script):
        follow()  # a merge in an appending-only writer waits for the keeper to be at the head
        ts = T0 + timedelta(seconds=i)
        try:
            if op == "identify":
                user, dev, mail = args
                ws.identify(dev, user, {"email": f"{user if mail == 'own' else mail}@ex.com"},
                            timestamp=ts)
            elif op == "set":
                ws.set_profile_attributes(args[0], {"plan": args[1]}, timestamp=ts)
            elif op == "clear":
                ws.clear_identify(args[0], timestamp=ts)
            else:
                ws.merge_persons(args[0], args[1], reason="looked alike")
        except IdstitchError:
            pass  # refused (a merge of one person with itself, an anonymous one): nothing done


@contextmanager
def keeper_and_writer(url: str, policy: str) -> Iterator[tuple[Workspace, Workspace, Follower]]:
    """A workspace keeping the custom projection, an appending-only writer of the same store,
    and the follower step the keeper catches up with (each step when the test says)."""
    clock = FrozenClock(T0)
    with (idstitch.open(url, clock=clock, anonymous_merge=policy,
                        projections=[ChangeLog()]) as keeper,
          idstitch.open(url, clock=clock, anonymous_merge=policy,
                        projections="external") as writer):
        yield keeper, writer, Follower(keeper._services.projector, None, report=lambda line: None)


def waits_before_the_decision(keeper: Workspace, follower: Follower,
                              kind: type[DeviceEvent], rebuilt_meanwhile: bool) -> None:
    """Between the writer's decision and its rewrite of the identity rows: the keeper (its
    projection rebuilt first, if so) catches up, and stops right before the decision."""
    if rebuilt_meanwhile:
        keeper.rebuild(["change_log"])
    follower.step()
    [(decision, _)] = keeper.log.read_spans([(DECISIONS_STREAM, 1, None)], frozenset({kind}))
    assert ChangeLog.position_of(keeper) == decision - 1


def ends_as_a_rebuild(keeper: Workspace, follower: Follower) -> None:
    """Once the writer is done: the keeper catches up to the head, its rows a rebuild's."""
    follower.step()
    assert keeper.lag() == 0
    kept = ChangeLog.rows_of(keeper)
    keeper.rebuild(["change_log"])
    assert ChangeLog.rows_of(keeper) == kept


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(script=st.lists(step, max_size=20), victim=st.sampled_from(USERS),
       identified_at=st.integers(0, 20), policy=st.sampled_from(("merge", "switch")),
       rebuilt_meanwhile=st.booleans())
def test_a_custom_projection_kept_elsewhere_ends_as_a_rebuild(
        durable_url_factory: Callable[[], str], keeper_first: Callable[..., Any],
        script: list[tuple[Any, ...]], victim: str, identified_at: int, policy: str,
        rebuilt_meanwhile: bool) -> None:
    # The victim is identified somewhere in the traffic (on a device of its own).
    script = [*script[:identified_at], ("identify", victim, f"{victim}-dev0", "own"),
              *script[identified_at:]]
    with keeper_and_writer(durable_url_factory(), policy) as (keeper, writer, follower):
        play(writer, script, follower.step)
        follower.step()
        if writer.profile(victim) is None:
            event("nothing to forget")
            return  # never identified: nothing to forget by that id

        def meanwhile(step: Callable[..., Any]) -> Callable[..., Any]:
            def between(*args: Any, **kwargs: Any) -> Any:
                # The decision is recorded, the rows not purged yet.
                waits_before_the_decision(keeper, follower, PersonForgotten, rebuilt_meanwhile)
                event(f"the keeper waited before {getattr(step, '__name__', step)}")
                return step(*args, **kwargs)
            return between

        projector = writer._services.projector
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(erasure, "_purge", meanwhile(erasure._purge))
            patch.setattr(projector, "rebuild", meanwhile(projector.rebuild))
            # The keeper folds past the decision while the forget waits for it.
            patch.setattr(erasure, "drop_unkept", keeper_first(follower.step))
            assert writer.forget(victim, reason="erasure request").dropped == []
        ends_as_a_rebuild(keeper, follower)


@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(script=st.lists(step, max_size=20), choice=st.integers(0, 20),
       policy=st.sampled_from(("merge", "switch")), rebuilt_meanwhile=st.booleans())
def test_a_custom_projection_kept_elsewhere_ends_as_a_rebuild_after_an_unmerge(
        durable_url_factory: Callable[[], str], script: list[tuple[Any, ...]], choice: int,
        policy: str, rebuilt_meanwhile: bool) -> None:
    with keeper_and_writer(durable_url_factory(), policy) as (keeper, writer, follower):
        play(writer, script, follower.step)
        follower.step()
        undoable = sorted({m.merge_id: m.kind for user in USERS for m in writer.merges(user)
                           if m.kind in ("explicit", "merged")}.items())
        if not undoable:
            event("nothing to unmerge")
            return
        merge_id, kind = undoable[choice % len(undoable)]
        event(f"undoing a merge of kind {kind}")
        projector = writer._services.projector
        replay = projector.replay_persons

        def between() -> None:
            # The decision is recorded, the identity rows not replayed yet.
            waits_before_the_decision(keeper, follower, MergeUndone, rebuilt_meanwhile)
            replay()

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(projector, "replay_persons", between)
            writer.unmerge(merge_id, reason="two people")
        ends_as_a_rebuild(keeper, follower)
