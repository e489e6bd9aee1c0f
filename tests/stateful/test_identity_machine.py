"""Random command sequences against every store and a tiny reference model (DatabaseComparison).

After each step: the memory, SQLite and PostgreSQL workspaces hold identical projection rows;
the memory workspace's full rebuild equals its incremental rows; and a reference model of the
rules, written independently and as plainly as possible, agrees on who each device belongs to
and on every person's attributes. The model computes an attribute by replaying all the writes
a person received in client-time order, which is the definition the projection's incremental
per-key slots must match, however late the events arrive.
"""

from __future__ import annotations

import itertools
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

import idstitch
from idstitch.errors import NotIdentified
from idstitch.testing import FrozenClock, TemporaryPostgres
from idstitch.workspace import Workspace

DEVICES = st.sampled_from(["d1", "d2", "d3"])
USERS = st.sampled_from(["alice", "bob", "carol"])
KEYS = st.sampled_from(["plan", "color", "age"])
VALUES = st.one_of(st.none(), st.integers(0, 3), st.sampled_from(["", "x", "y"]))
T0 = datetime(2026, 1, 1, tzinfo=UTC)
_schemas = itertools.count()


@dataclass
class ModelPerson:
    """A person of the model: a label, and every attribute write it received."""

    label: str
    user_id: str | None = None
    writes: list[tuple[datetime, str, str, Any]] = field(default_factory=list)

    def attributes(self) -> dict[str, Any]:
        """Replay the writes in client-time order: the definition of the rules."""
        out: dict[str, Any] = {}
        # Within one call set_once goes first, so a set or unset of the same key wins.
        for _, op, key, value in sorted(self.writes, key=lambda w: (w[0], w[1] != "once")):
            if op == "set" and value is not None:
                out[key] = value
            elif op == "set" or op == "unset":
                out.pop(key, None)
            elif op == "once" and key not in out and value is not None:
                out[key] = value
        return out


class Model:
    """identity-model.md §3 for ids only, as plainly as it can be written."""

    def __init__(self, policy: str) -> None:
        self.policy = policy
        self.device_person: dict[str, ModelPerson] = {}
        self.generation: dict[str, int] = {}
        self.by_user: dict[str, ModelPerson] = {}
        self.token_owner: dict[str, str] = {}

    def person_of(self, device: str) -> ModelPerson:
        if device not in self.device_person:
            self.generation[device] = 0
            self.device_person[device] = ModelPerson(f"anon:{device}:0")
        return self.device_person[device]

    def identify(self, device: str, user: str) -> ModelPerson:
        current, target = self.person_of(device), self.by_user.get(user)
        if target is current:
            return current
        if current.user_id is None and target is None:
            current.user_id = user
            self.by_user[user] = current
            return current
        if current.user_id is None and target is not None and self.policy == "merge":
            target.writes.extend(current.writes)
        if target is None:
            target = ModelPerson(f"user:{user}", user_id=user)
            self.by_user[user] = target
        self.device_person[device] = target
        return target

    def clear(self, device: str) -> None:
        self.person_of(device)
        self.generation[device] += 1
        self.device_person[device] = ModelPerson(f"anon:{device}:{self.generation[device]}")


class IdentityMachine(RuleBasedStateMachine):
    """Drives the same commands into three stores and the model."""

    def __init__(self, pg: TemporaryPostgres, policy: str) -> None:
        super().__init__()
        self.clock = FrozenClock(T0)
        self.dir = tempfile.TemporaryDirectory()
        urls = ["memory:", f"sqlite:///{self.dir.name}/m.db",
                pg.url("idstitch_tests") + f"?schema=machine{next(_schemas)}"]
        self.stores: list[Workspace] = [
            idstitch.open(u, anonymous_merge=policy, clock=self.clock) for u in urls  # type: ignore[arg-type]
        ]
        self.model = Model(policy)
        self.step = 0
        self.sent: list[tuple[str, str, dict[str, Any]]] = []

    def _time(self, offset: int) -> datetime:
        # Unique per step (no ties: those are tested by example), but late events are common.
        self.step += 1
        return T0 + timedelta(seconds=offset, microseconds=self.step)

    def _all(self, method: str, *args: Any, **kwargs: Any) -> list[Any]:
        return [getattr(ws, method)(*args, **kwargs) for ws in self.stores]

    @rule(device=DEVICES, user=USERS, traits=st.dictionaries(KEYS, VALUES, max_size=2),
          offset=st.integers(0, 100))
    def identify(self, device: str, user: str, traits: dict[str, Any], offset: int) -> None:
        ts = self._time(offset)
        message_id = f"m{self.step}"
        self._all("identify", device, user, traits, timestamp=ts, message_id=message_id)
        self.sent.append((device, message_id, {"user": user}))
        person = self.model.identify(device, user)
        person.writes.extend((ts, "set", k, v) for k, v in traits.items())

    @rule(device=DEVICES, traits=st.dictionaries(KEYS, VALUES, max_size=2),
          once=st.dictionaries(KEYS, st.integers(0, 3), max_size=1),
          unset=st.lists(KEYS, max_size=1, unique=True), offset=st.integers(0, 100))
    def set_attributes(self, device: str, traits: dict[str, Any], once: dict[str, Any],
                       unset: list[str], offset: int) -> None:
        ts = self._time(offset)
        self._all("set_profile_attributes", device, traits, set_once=once, unset=unset,
                  timestamp=ts, message_id=f"m{self.step}")
        self.sent.append((device, f"m{self.step}", {}))
        person = self.model.person_of(device)
        person.writes.extend((ts, "set", k, v) for k, v in traits.items())
        person.writes.extend((ts, "unset", k, None) for k in unset)
        person.writes.extend((ts, "once", k, v) for k, v in once.items())

    @rule(batch=st.lists(st.tuples(DEVICES, st.one_of(st.none(), USERS),
                                   st.dictionaries(KEYS, VALUES, max_size=2),
                                   st.integers(0, 100)), min_size=1, max_size=6),
          batch_size=st.integers(1, 4))
    def ingest(self, batch: list[tuple[str, str | None, dict[str, Any], int]],
               batch_size: int) -> None:
        """The bulk path: Segment identify messages, with and without a user id."""
        messages = []
        for device, user, traits, offset in batch:
            ts = self._time(offset)
            message: dict[str, Any] = {"type": "identify", "anonymousId": device,
                                       "traits": traits, "messageId": f"m{self.step}",
                                       "timestamp": ts.isoformat()}
            if user is not None:
                message["userId"] = user
            messages.append(message)
            self.sent.append((device, f"m{self.step}", {}))
            person = (self.model.identify(device, user) if user is not None
                      else self.model.person_of(device))
            person.writes.extend((ts, "set", k, v) for k, v in traits.items())
        reports = [ws.ingest(messages, batch_size=batch_size) for ws in self.stores]
        assert {(r.accepted, r.duplicates, len(r.rejected)) for r in reports} == {
            (len(messages), 0, 0)}

    @rule(device=DEVICES)
    def clear(self, device: str) -> None:
        self._all("clear_identify", device, timestamp=self._time(0))
        self.model.clear(device)

    @rule(device=DEVICES)
    def logout(self, device: str) -> None:
        known = self.model.device_person.get(device)
        anonymous = known is None or known.user_id is None
        ts = self._time(0)
        for ws in self.stores:
            if anonymous:
                with pytest.raises(NotIdentified):
                    ws.logout(device)
            else:
                ws.logout(device, timestamp=ts)
        if not anonymous:
            self.model.clear(device)

    @rule(device=DEVICES, token=st.sampled_from(["t1", "t2"]))
    def register_token(self, device: str, token: str) -> None:
        self._all("register_device_token", device, token, timestamp=self._time(0))
        self.model.person_of(device)
        # A device holds one token (a refresh replaces it); a token has one owner.
        self.model.token_owner = {t: d for t, d in self.model.token_owner.items() if d != device}
        self.model.token_owner[token] = device

    @rule(data=st.data())
    def replay_a_sent_message(self, data: st.DataObject) -> None:
        if not self.sent:
            return
        device, message_id, _ = data.draw(st.sampled_from(self.sent))
        heads = [ws.log.head() for ws in self.stores]
        results = self._all("set_profile_attributes", device, {"plan": "dup"},
                            message_id=message_id, timestamp=self._time(500))
        assert results == [None, None, None]
        assert [ws.log.head() for ws in self.stores] == heads

    @invariant()
    def stores_agree_and_rebuild_equals_incremental(self) -> None:
        memory, *others = self.stores
        rows = memory.dump()
        for ws in others:
            assert ws.dump() == rows, ws.url
        memory.rebuild()
        assert memory.dump() == rows

    @invariant()
    def the_model_agrees(self) -> None:
        ws = self.stores[0]
        for device, person in self.model.device_person.items():
            profile = ws.profile_of_device(device)
            assert profile is not None
            assert profile.identifiers.get("id") == person.user_id, device
            assert profile.attributes == person.attributes(), (device, person.label)
        for user, person in self.model.by_user.items():
            profile = ws.profile(user)
            assert profile is not None
            assert profile.attributes == person.attributes(), user
            owned = sorted(d for d, p in self.model.device_person.items() if p is person)
            assert sorted(d.device_id for d in profile.devices) == owned, user
        for token, device in self.model.token_owner.items():
            assert ws.device(device).token == token  # type: ignore[union-attr]

    def teardown(self) -> None:
        for ws in self.stores[1:]:
            rows = ws.dump()
            ws.rebuild()
            assert ws.dump() == rows, ws.url
        for ws in self.stores:
            ws.close()
        self.dir.cleanup()


@pytest.mark.parametrize("policy", ["merge", "switch"])
def test_identity_machine(postgres: TemporaryPostgres, policy: str) -> None:
    run_state_machine_as_test(
        lambda: IdentityMachine(postgres, policy),
        settings=settings(max_examples=40, stateful_step_count=25, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow]),
    )
