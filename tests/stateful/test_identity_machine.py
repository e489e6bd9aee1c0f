"""Random command sequences against every store and a tiny reference model (DatabaseComparison).

After each step: the memory, SQLite and PostgreSQL workspaces hold identical projection rows;
the memory workspace's full rebuild equals its incremental rows; and a reference model of the
rules, written independently and as plainly as possible, agrees on who each device belongs to
and on every person's attributes. The model computes an attribute by replaying all the writes
a person received in client-time order, which is the definition the projection's incremental
per-key slots must match, however late the events arrive. Calls may share the previous call's
client time, so two persons' writes tie, in either log order, before one is merged into the
other.
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


Write = tuple[datetime, int, int, int, str, str, Any]
"""(client time, rank, log order, order in its call, op, key, value). Rank 0: written by the
person itself; lower: carried in by a merge (the later the merge, the lower)."""
_OP_ORDER = {"once": 0, "set": 1, "unset": 2}
"""Within one call set_once goes first, so a set or unset of the same key wins."""


@dataclass
class ModelPerson:
    """A person of the model: a label, and every attribute write it received."""

    label: str
    user_id: str | None = None
    writes: list[Write] = field(default_factory=list)

    def write(self, ts: datetime, seq: int, op: str, key: str, value: Any) -> None:
        if op != "once" or value is not None:  # a None in set_once is ignored
            self.writes.append((ts, 0, seq, _OP_ORDER[op], op, key, value))

    def absorb(self, retired: ModelPerson, rank: int) -> None:
        """An anonymous person merged into this one: on a key both wrote at one client time
        the survivor wins the tie. The retired person's sets and removals there count as made
        before all of the survivor's; its set_once writes there do not count."""
        held = {(w[5], w[0]) for w in self.writes}
        self.writes.extend((w[0], rank, *w[2:]) for w in retired.writes
                           if not (w[4] == "once" and (w[5], w[0]) in held))

    def attributes(self) -> dict[str, Any]:
        """Replay the writes in order: the definition of the rules."""
        out: dict[str, Any] = {}
        for *_, op, key, value in sorted(self.writes, key=lambda w: w[:4]):
            if op == "once":
                out.setdefault(key, value)
            elif op == "set" and value is not None:
                out[key] = value
            else:
                out.pop(key, None)
        return out


class Model:
    """identity-model.md §3 for ids only, as plainly as it can be written."""

    def __init__(self, policy: str) -> None:
        self.policy = policy
        self.device_person: dict[str, ModelPerson] = {}
        self.generation: dict[str, int] = {}
        self.by_user: dict[str, ModelPerson] = {}
        self.token_owner: dict[str, str] = {}
        self.merges = 0

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
            self.merges += 1
            target.absorb(current, -self.merges)
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
        self.last_time = T0
        self.sent: list[tuple[str, str, dict[str, Any]]] = []

    def _time(self, offset: int, tie: bool = False) -> datetime:
        # Unique per step unless ``tie`` (then the previous step's: two devices' persons write
        # at one client time); late events are common.
        self.step += 1
        if not tie:
            self.last_time = T0 + timedelta(seconds=offset, microseconds=self.step)
        return self.last_time

    def _all(self, method: str, *args: Any, **kwargs: Any) -> list[Any]:
        return [getattr(ws, method)(*args, **kwargs) for ws in self.stores]

    @rule(device=DEVICES, user=USERS, traits=st.dictionaries(KEYS, VALUES, max_size=2),
          offset=st.integers(0, 100), tie=st.booleans())
    def identify(self, device: str, user: str, traits: dict[str, Any], offset: int,
                 tie: bool) -> None:
        ts = self._time(offset, tie)
        message_id = f"m{self.step}"
        self._all("identify", device, user, traits, timestamp=ts, message_id=message_id)
        self.sent.append((device, message_id, {"user": user}))
        person = self.model.identify(device, user)
        for k, v in traits.items():
            person.write(ts, self.step, "set", k, v)

    @rule(device=DEVICES, traits=st.dictionaries(KEYS, VALUES, max_size=2),
          once=st.dictionaries(KEYS, st.integers(0, 3), max_size=1),
          unset=st.lists(KEYS, max_size=1, unique=True), offset=st.integers(0, 100),
          tie=st.booleans())
    def set_attributes(self, device: str, traits: dict[str, Any], once: dict[str, Any],
                       unset: list[str], offset: int, tie: bool) -> None:
        self._profile_call(device, traits, once, unset, self._time(offset, tie))

    @rule(devices=st.permutations(["d1", "d2", "d3"]), key=KEYS,
          ops=st.tuples(*[st.sampled_from(["set", "remove", "once"])] * 2),
          value=st.integers(0, 3), offset=st.integers(0, 100),
          survivor=st.sampled_from([None, 0, 1]), user=USERS)
    def tie(self, devices: list[str], key: str, ops: tuple[str, str], value: int,
            offset: int, survivor: int | None, user: str) -> None:
        """Two devices write one key at one client time, each a set, a removal or a set_once,
        in either log order: the ties a merge of their persons must decide. With
        ``survivor`` (which of the two), that device is identified first (as ``user``, unless
        it is already), the other starts anonymous (cleared, unless it is already), and after
        the writes the other identifies as the survivor's user: a merge of the two."""
        pair = devices[:2]
        if survivor is not None:
            if self.model.person_of(pair[survivor]).user_id is None:
                self.identify(pair[survivor], user, {}, offset, tie=False)
            if self.model.person_of(pair[1 - survivor]).user_id is not None:
                self.clear(pair[1 - survivor])
        ts = self._time(offset)
        for device, op in zip(pair, ops, strict=True):
            self._profile_call(device, {key: value} if op == "set" else {},
                               {key: value + 4} if op == "once" else {},
                               [key] if op == "remove" else [], ts)
            self.step += 1
        if survivor is not None:
            survivor_user = self.model.person_of(pair[survivor]).user_id
            assert survivor_user is not None
            self.identify(pair[1 - survivor], survivor_user, {}, offset + 1, tie=False)

    def _profile_call(self, device: str, traits: dict[str, Any], once: dict[str, Any],
                      unset: list[str], ts: datetime) -> None:
        self._all("set_profile_attributes", device, traits, set_once=once, unset=unset,
                  timestamp=ts, message_id=f"m{self.step}")
        self.sent.append((device, f"m{self.step}", {}))
        person = self.model.person_of(device)
        for k, v in traits.items():
            person.write(ts, self.step, "set", k, v)
        for k in unset:
            person.write(ts, self.step, "unset", k, None)
        for k, v in once.items():
            person.write(ts, self.step, "once", k, v)

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
            for k, v in traits.items():
                person.write(ts, self.step, "set", k, v)
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
