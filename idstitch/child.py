"""The projecting child: a second process that folds the log into the parent's projections.

Started by :class:`idstitch.service.background.BackgroundProjector` (see that module for the
protocol on its stdin and stdout). It opens the same store and builds exactly the parent's
projection registry, both through the composition root, then either replays named projections
to a position (a rebuild) or follows the log as a bulk ingest appends to it. While following,
it folds only the projections whose lease it holds (see :mod:`idstitch.projections.runner`):
when another process's ingest is already projecting the store, this child waits for that one
instead of folding the same events, and takes over when it is done.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import IO

import msgspec

from idstitch import bootstrap
from idstitch.adapters.stores import Stores
from idstitch.adapters.urls import redacted
from idstitch.projections.base import ProjectionSpec, Registry, import_topic
from idstitch.projections.custom import Projection, check_projection
from idstitch.projections.custom_runner import CustomRunner
from idstitch.projections.replay import replay
from idstitch.projections.runner import (
    PAGE_SIZE,
    Leases,
    RunnerStates,
    Stretch,
    leases_of,
)
from idstitch.service.background import (
    CHILD_BATCH_SIZE,
    HEARTBEAT_SECONDS,
    IDLE_COMMIT_EVENTS,
    POLL_SECONDS,
)
from idstitch.service.gc_pause import bulk_gc
from idstitch.service.pipe_lines import PipeLines

Reply = Callable[[str], None]
WANTED_POLL_SECONDS = 0.02
"""How often the child reads the positions other processes wait for (when it has something to
commit): a waiting process waits this long at most for its request to be seen."""


def serve(requests: IO[str], replies: IO[str]) -> None:
    """The child: replay, or catch up and answer requests until told to stop (or the parent
    goes away)."""

    def reply(line: str) -> None:
        replies.write(line + "\n")
        replies.flush()

    lines = PipeLines(requests.fileno())
    url = (lines.next(None) or "").strip()
    specs = lines.next(None) or ""
    job = (lines.next(None) or "").split()
    try:
        stores = bootstrap.open_stores(url)
    except Exception as e:  # reported to the parent, which then catches up itself
        reply(f"error cannot open the store: {e}")
        return
    try:
        decoded = msgspec.json.decode(specs, type=list[ProjectionSpec])
        registry = Registry.from_specs(decoded)
        registry.attach(stores.log)
    except Exception as e:  # an unimportable projection: the parent projects itself
        stores.close()
        reply(f"error cannot build the projections: {e}")
        return
    custom = _custom(stores, registry, decoded, reply)
    reply("ready")
    with bulk_gc():
        try:
            if job[:1] == ["replay"]:
                _replay(stores, registry, job[1].split(","), int(job[2]), reply)
            else:
                _follow(stores, registry, url, lines, reply, custom)
        except BrokenPipeError:
            pass  # the parent is gone (killed): nobody to report to, nothing left to do
        except Exception as e:  # reported to the parent, which then catches up itself
            with contextlib.suppress(OSError):  # unless it is gone meanwhile
                reply(f"error {type(e).__name__}: {e}")
        finally:
            stores.close()


def _replay(stores: Stores, registry: Registry, names: list[str], until: int,
            reply: Reply) -> None:
    try:
        projections = registry.select(names)
    except KeyError:
        reply(f"error unknown projections among {names}")
        return
    heard = time.monotonic()
    position = min(stores.rows.position(p.name) for p in projections)

    def heartbeat(replayed: int) -> None:
        nonlocal heard, position
        position += replayed
        if time.monotonic() - heard > HEARTBEAT_SECONDS:
            reply(f"folding {position}")
            heard = time.monotonic()

    replay(projections, RunnerStates(), stores.log, stores.rows, until, heartbeat)
    reply(f"at {until}")


def _custom(stores: Stores, registry: Registry, specs: list[ProjectionSpec], reply: Reply
            ) -> CustomRunner | None:
    """The runner of the parent's custom projections (None when it has none). One this
    process cannot build is named to the parent (a ``warning``), which folds it instead."""
    chosen = [s for s in specs if s.custom]
    if not chosen:
        return None
    runner = bootstrap.custom_runner(stores, registry)
    for spec in chosen:
        try:
            found = import_topic(spec.topic)
            if not (isinstance(found, type) and issubclass(found, Projection)):
                raise TypeError("not an idstitch.Projection subclass")
            runner.register(check_projection(found))
        except Exception as e:
            reply(f"warning custom projection {spec.topic} cannot be folded by the projecting "
                  f"child ({type(e).__name__}: {e}); the ingesting process folds it instead")
    return runner


def _fold_custom(custom: CustomRunner | None, stores: Stores, registry: Registry) -> None:
    """Fold the custom projections up to where every built-in one has committed. A handler
    that fails here is left where it is: the parent's catch-up meets and reports it."""
    if custom is not None:
        custom.catch_up(min(stores.rows.position(p.name) for p in registry))


def _follow(stores: Stores, registry: Registry, url: str, requests: PipeLines,
            reply: Reply, custom: CustomRunner | None = None) -> None:
    # One process at a time folds a projection: this child folds those whose lease it holds
    # (usually all of them), and looks again for the others' at every turn. A projection
    # another process folds (another ingest's child, say) is that process's to commit: a
    # request for a position waits until it has committed there, asking it to (want).
    leases = leases_of(stores.rows)
    states = RunnerStates()
    stretches: dict[str, Stretch | None] = dict.fromkeys(registry.names)
    waiting_for: int | None = None
    stopping = False
    ending = False
    """The parent's input has ended: it commits what is left in pieces, and will wait for
    all of it; each fold that reaches the head is committed as it is done, so what that wait
    finds uncommitted is the last piece's. (A fold still behind the head is not: a child
    30,000 events behind at the end of a PostgreSQL ingest committed each 10,000-event page,
    rewriting the hot rows three times, ~0.15 s each, while the parent waited.)"""
    idle_asked = False
    """The parent asked to hear when there is nothing left to fold (``idle``)."""
    heard = time.monotonic()
    wanted: dict[str, int] = {}
    asked = 0.0
    try:
        while True:
            for projection in registry:
                if stretches[projection.name] is None and (
                        leases is None or leases.try_lease(projection.name)):
                    stretches[projection.name] = Stretch(projection, states.of(projection),
                                                             stores.log, stores.rows)
            held = [s for s in stretches.values() if s is not None]
            # Each projection reads only its own events, up to the head as it is now.
            head = stores.log.head()
            before = [s.position for s in held]
            for stretch in held:
                stretch.fold(PAGE_SIZE, until=head)
            folded = [s.position for s in held] != before
            if time.monotonic() - asked > WANTED_POLL_SECONDS:
                wanted, asked = _wanted(leases, stretches), time.monotonic()
            for name, maybe in stretches.items():
                # Commit rarely: every commit holds the write lock the ingest's appends wait
                # for, and rewrites the hot rows. Reaching the head is no reason to commit; the
                # parent asking for a position, another process waiting for one, or a full
                # working set, is.
                if maybe is not None and (
                        maybe.pending >= CHILD_BATCH_SIZE or maybe.full or (
                            not folded and maybe.pending >= IDLE_COMMIT_EVENTS) or (
                            ending and maybe.pending and maybe.position >= head) or (
                            maybe.start < wanted.get(name, 0) <= maybe.position)):
                    maybe.commit()
                    # The custom projections follow the built-in rows as they commit (so the
                    # ingest's last request waits only for the rest).
                    _fold_custom(custom, stores, registry)
            if idle_asked and held and not folded:
                # At the head: the parent commits what it has gathered when it reads this,
                # rather than at its next full batch (this process would wait for it). A
                # child that folds nothing (another process holds every lease) never says so:
                # smaller batches would only cost its parent commits.
                reply(f"idle {head}")
                idle_asked = False
            if waiting_for is None:
                # A request may come at any time, also while there is a backlog: look without
                # waiting then, and wait a moment at the head.
                line = requests.next(0 if folded else POLL_SECONDS)
                if line is None:
                    continue
                if not line:
                    return  # the parent is gone
                verb, _, arg = line.strip().partition(" ")
                if verb == "ending":
                    ending = True
                    continue
                if verb == "idle":
                    idle_asked = True
                    continue
                waiting_for, stopping = int(arg), verb == "stop"
                heard = time.monotonic()
                if leases is not None:
                    for name, maybe in stretches.items():
                        if maybe is None:
                            leases.want(name, waiting_for)
            position = min(s.position if s is not None else stores.rows.position(name)
                           for name, s in stretches.items())
            if position >= waiting_for:
                # Every stretch commits (no short cut): each one's position is then the store's.
                committed = [s.commit() for s in stretches.values() if s is not None]
                if not all(committed):
                    continue  # somebody else committed: fold again from there
                _fold_custom(custom, stores, registry)
                reply(f"at {min(_committed(stores, stretches))}")
                waiting_for = None
                if stopping:
                    return
            elif not folded and stores.log.head() < waiting_for:
                # The parent appended up to there before asking: a log without that position
                # is not the parent's store.
                reply(f"error the store at {redacted(url)} has no position {waiting_for}")
                return
            elif not folded:
                # Another process folds what the parent waits for (it holds the leases): look
                # again in a moment. Looking at once again and again took ~1.2 s of CPU in a
                # two-writer ingest, from the child that does the folding (two cores).
                time.sleep(POLL_SECONDS)
            if waiting_for is not None and time.monotonic() - heard > HEARTBEAT_SECONDS:
                reply(f"folding {position}")
                heard = time.monotonic()
    finally:
        if leases is not None:
            for name, maybe in stretches.items():
                if maybe is not None:
                    leases.release_lease(name)


def _wanted(leases: Leases | None, stretches: dict[str, Stretch | None]) -> dict[str, int]:
    """The positions other processes wait for, of the projections this child folds and has
    folded past its last commit (one read each; none while there is nothing to commit)."""
    if leases is None:
        return {}
    return {name: leases.wanted(name) for name, s in stretches.items()
            if s is not None and s.position > s.start}


def _committed(stores: Stores, stretches: dict[str, Stretch | None]) -> list[int]:
    return [s.position if s is not None else stores.rows.position(name)
            for name, s in stretches.items()]
