"""The Decisions aggregate: the person-level decisions no device makes (identity-model.md §4).

Explicit merges, unmerges and forgets are a workspace's, not a device's: they are the events of
one more stream in the same log as the devices' (:data:`DECISIONS_STREAM`), so a rebuild, an
as-of answer and a person's history see them in log order like everything else. The identity
projection honours them; this aggregate records them and keeps the one invariant that is its
own: a merge is undone at most once (two writers undoing it at the same time append to the same
stream version: one of them reloads, and is refused).

Its events keep the fields they were first stored with (a ``device_id`` naming the stream,
stamped with the key id a device's stream would get), so a log written before this aggregate
existed reads unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from idstitch.domain.commands import Decision, DeviceCommand, ForgetPerson, MergePersons, Unmerge
from idstitch.domain.device import Recorded
from idstitch.domain.errors import InvalidCommand
from idstitch.domain.events import (
    DECISIONS_STREAM,
    DeviceEvent,
    MergeUndone,
    PersonForgotten,
    PersonsMerged,
)
from idstitch.domain.ids import AggregateId, device_aggregate_id, subject_key_id
from idstitch.domain.ids import merge_id as minted_merge_id
from msgspec.structs import replace

_KEY_ID = subject_key_id(DECISIONS_STREAM, 0, None)
"""The key id every decision is stamped with (as the stream's first events were): decisions
hold no personal value, so nothing is sealed under it."""


class Decisions:
    """The workspace's decisions stream: commands record events; ``apply`` is the only change."""

    device_id = DECISIONS_STREAM
    """The stream's name (the writer keys every aggregate of a batch by it)."""

    def __init__(self, aggregate_id: AggregateId | None = None) -> None:
        self.id = device_aggregate_id(DECISIONS_STREAM) if aggregate_id is None else aggregate_id
        self.version = 0
        self.undone: set[str] = set()
        """The merges undone so far."""
        self._pending: list[Recorded] = []

    def collect_events(self) -> list[Recorded]:
        """Hand over the pending events (eventsourcing's CollectEventsProtocol)."""
        pending, self._pending = self._pending, []
        return pending

    def copy(self) -> Decisions:
        """The stream as it is now, apart (see :meth:`Device.copy`)."""
        twin = Decisions(self.id)
        twin.version = self.version
        twin.undone = set(self.undone)
        return twin

    def record_into(self, sink: list[Recorded]) -> None:
        """Record the next events straight into ``sink`` (see :meth:`Device.record_into`)."""
        self._pending = sink

    def is_duplicate(self, message_id: str | None) -> bool:
        """Decisions carry no message id: none is a repeat."""
        return False

    def apply(self, event: DeviceEvent) -> None:
        """Evolve the stream's state by one event (also used on replay)."""
        if type(event) is MergeUndone:
            self.undone.add(event.merge_id)

    def _record(self, event: DeviceEvent) -> None:
        self.apply(event)
        self.version += 1
        self._pending.append(Recorded(self.id, self.version, replace(event, key_id=_KEY_ID)))

    def handle(self, command: DeviceCommand | Decision, now: datetime) -> bool:
        """Record the decision a checked command says (``now``: its time)."""
        return _DECIDE[type(command)](self, command, now)

    def merge(self, cmd: MergePersons, now: datetime) -> bool:
        """Merge two identified persons (``cmd.primary`` and ``cmd.secondary``: the person ids
        its handler found, not the same)."""
        # Named by the decision that causes it, as an automatic merge is by its event: the
        # same traffic gives the same id on every store.
        merge_id = minted_merge_id(f"{DECISIONS_STREAM}#{self.version + 1}", "explicit")
        self._record(PersonsMerged(device_id=DECISIONS_STREAM, merge_id=merge_id,
                                   primary=cmd.primary, secondary=cmd.secondary,
                                   reason=cmd.reason, named=cmd.named, timestamp=now,
                                   recorded_at=now))
        return True

    def unmerge(self, cmd: Unmerge, now: datetime) -> bool:
        """Undo a merge (its handler found it, and found it undoable); once."""
        if cmd.merge_id in self.undone:
            raise InvalidCommand("merge_id", f"merge {cmd.merge_id!r} was undone already")
        self._record(MergeUndone(device_id=DECISIONS_STREAM, merge_id=cmd.merge_id,
                                 reason=cmd.reason, timestamp=now, recorded_at=now))
        return True

    def forget(self, cmd: ForgetPerson, now: datetime) -> bool:
        """Record that a person was forgotten (only its pseudonymous id)."""
        self._record(PersonForgotten(device_id=DECISIONS_STREAM, person_id=cmd.person_id,
                                     reason=cmd.reason, members=list(cmd.members),
                                     devices=list(cmd.devices), subjects=dict(cmd.subjects),
                                     held=list(cmd.held), took=list(cmd.took),
                                     timestamp=now, recorded_at=now))
        return True


_DECIDE: dict[type[Any], Callable[[Decisions, Any, datetime], bool]] = {
    MergePersons: Decisions.merge,
    Unmerge: Decisions.unmerge,
    ForgetPerson: Decisions.forget,
}
"""Which method of the aggregate records each decision command."""
