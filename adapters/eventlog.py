"""The device event log: an eventsourcing Application with our mapper, on any of its recorders."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from collections.abc import Set as AbstractSet
from contextlib import AbstractContextManager, contextmanager
from functools import partial
from typing import Any, Protocol
from uuid import UUID

import msgspec
from eventsourcing.application import Application
from eventsourcing.persistence import IntegrityError, Mapper, PersistenceError
from eventsourcing.popo import POPOApplicationRecorder
from idstitch.adapters import chain
from idstitch.adapters.codec import TOPICS, EventCodec, StructMapper
from idstitch.adapters.memory_log import MemoryLog
from idstitch.domain.aggregates import Aggregate, new_aggregate
from idstitch.domain.device import Device, Recorded
from idstitch.domain.errors import CorruptEvent, StoreError
from idstitch.domain.events import AnyDeviceEvent, DeviceEvent
from idstitch.domain.ports import AppendCheck, WriteConflict
from idstitch.domain.verification import Digest, Verification
from idstitch.projections.store import LoggedEvent, Span

END = 2**62
"""A position past any log's end (an open span's end)."""


@contextmanager
def translated(what: str) -> Iterator[None]:
    """The one place where eventsourcing's recorder errors become idstitch errors (the store
    modules translate their drivers' errors on the fast path the same way)."""
    try:
        yield
    except IntegrityError as e:
        raise WriteConflict(str(e)) from e
    except PersistenceError as e:
        raise StoreError(f"{what}: {e}") from e


class FastLog(Protocol):
    """Direct access to the recorder's events for appends and reads (its own table, or, in the
    memory store, its own list): the one path every store implements."""

    def append_events(self, rows: list[tuple[str, int, str, bytes]],
                      check: AppendCheck | None = None,
                      events: Sequence[DeviceEvent] | None = None) -> list[int]:
        """Insert (originator_id, version, topic, state) rows in one transaction; positions.
        ``check`` passes before anything is inserted (see AppendCheck); ``events`` (those of
        ``rows``) are for its ``landed``, which a store whose projection rows can go in the
        append calls (SQLite, PostgreSQL), and the memory store never does.

        Raises WriteConflict when a (originator_id, version) already exists."""
        ...

    def exclusive(
        self, check: AppendCheck | None = None,
    ) -> AbstractContextManager[Callable[[list[tuple[str, int, str, bytes]]], list[int]]]:
        """Hold the store's append lock until the block ends, yielding an insert function
        whose rows commit at the end; the log can be read meanwhile. ``check`` passes first,
        under the lock (the tracking rows read in the lock's transaction where the store
        can)."""
        ...

    def read_events(self, after: int, limit: int) -> list[tuple[int, bytes]]:
        """(position, state) of events after a position, in order."""
        ...

    def read_selected(
        self, after: int, until: int, limit: int, topics: list[str], first: bool
    ) -> list[tuple[int, bytes]]:
        """(position, state) of events with these topics (with ``first``, also of every
        aggregate's first event) in ``after < position <= until``, in order."""
        ...

    def device_events(self, aggregate_ids: list[UUID]) -> list[tuple[int, bytes]]:
        """(version, state) of every event of these aggregates, by aggregate then version."""
        ...

    def device_versions(self, aggregate_ids: list[UUID]) -> dict[str, int]:
        """The last version of each of these aggregates that has events, by UUID hex."""
        ...

    def read_spans(
        self, spans: list[tuple[str, int, int]], topics: list[str] | None
    ) -> list[tuple[int, bytes]]:
        """(position, state) of the events of each (aggregate id hex, start, end) with
        ``start <= position < end`` (of these topics, or all), in no particular order."""
        ...

    def events_after(self, since: list[tuple[UUID, int]]) -> list[tuple[int, bytes]]:
        """(version, state) of the events of each aggregate after the version given with it,
        by aggregate then version."""
        ...

    def head(self) -> int:
        """The last position (0 when empty)."""
        ...

    def chain_view(self) -> AbstractContextManager[chain.ChainedLog]:
        """The stored events and their hash chain as one consistent read sees them."""
        ...


def _owned(asked: dict[str, Any], device_id: str) -> Any:
    """What ``asked`` holds for the device an event read by device names: an event stored
    under another device's stream (a log changed around idstitch) is a StoreError, not a
    KeyError from deep inside a command."""
    try:
        return asked[device_id]
    except KeyError:
        raise StoreError(f"the log is damaged: an event of device {device_id!r} is stored "
                         "under another device's stream; `idstitch verify` names where the "
                         "log was changed") from None


def _named_device(state: bytes) -> str | None:
    """The device a damaged event's bytes still name, if any (a best effort for the error)."""
    try:
        raw: Any = msgspec.msgpack.decode(state)
    except Exception:  # undecodable at all (or sealed): no name
        return None
    found = raw.get("device_id") if isinstance(raw, dict) else None
    return found if isinstance(found, str) else None


class DeviceLog(Application[UUID]):
    """Stores and loads the aggregates (devices, the decisions stream); reads the global log
    for the projections.

    Single devices are loaded through eventsourcing's Repository. Appends, batch loads and log
    reads, the hot paths, go to the store's :class:`FastLog` on the recorder's own rows
    (``fast``; in the memory store, :class:`~idstitch.adapters.memory_log.MemoryLog`), skipping
    the per-event protocol checks and objects of ``Application.save`` and
    ``select_notifications``.
    """

    name = "idstitch"

    def __init__(
        self, env: dict[str, str], codec: EventCodec | None = None, fast: FastLog | None = None
    ) -> None:
        self.codec = codec or EventCodec()
        with translated("cannot open the event store"):
            super().__init__(env=env)
        if fast is None:
            if not isinstance(self.recorder, POPOApplicationRecorder):
                raise StoreError(f"the {type(self.recorder).__name__} store gave no FastLog")
            fast = MemoryLog(self.recorder)
        self.fast: FastLog = fast
        self.tagger: Callable[[str], str] | None = getattr(self.codec.cipher, "session_tag", None)
        """How the devices it loads tag their SDK sessions (the cipher's keyed hash; None
        where events are not encrypted)."""

    def drop_keys(self) -> None:
        """See :meth:`idstitch.projections.store.EventLog.drop_keys`."""
        cipher = self.codec.cipher
        if cipher is not None:
            cipher.drop_cache()

    def identifier_digest(self, identifier: str) -> str | None:
        """See :meth:`idstitch.projections.store.EventLog.identifier_digest`."""
        digest = getattr(self.codec.cipher, "digest", None)  # encryption off: no keys
        return None if digest is None else str(digest(identifier).hex())

    def construct_mapper(self) -> Mapper[UUID]:
        """Our msgspec mapper instead of the stock JSON one."""
        return StructMapper(self.codec)

    def load(self, device_id: str) -> Aggregate | None:
        """The device (or decisions stream) as its events say, or None if it has none."""
        loaded = self.load_many([device_id])[device_id]
        return loaded if loaded.version else None

    def load_many(self, device_ids: Iterable[str]) -> dict[str, Aggregate]:
        """Every one of ``device_ids``: loaded from its events (one query, the batch path), or
        new (version 0) when it has none."""
        ids = list(device_ids)
        aggregate_ids = {d: Device.create_id(d) for d in ids}
        with translated("cannot load devices"):
            rows = self.fast.device_events(list(aggregate_ids.values()))
        out: dict[str, Aggregate] = {}
        try:
            events = self._versioned(rows)
        except Exception as e:  # any decoder's or cipher's error: find the event, name it
            raise self._located(ids, e) from e
        for version, event in events:
            device = out.get(event.device_id)
            if device is None:
                device = out[event.device_id] = new_aggregate(
                    event.device_id, _owned(aggregate_ids, event.device_id))
            device.apply(event)
            device.version = version
        for device_id, aggregate_id in aggregate_ids.items():
            if device_id not in out:
                out[device_id] = new_aggregate(device_id, aggregate_id)
        tagger = self.tagger
        if tagger is not None:
            for aggregate in out.values():
                if type(aggregate) is Device:
                    aggregate.tagger = tagger
        return out

    def refresh(self, devices: Iterable[Aggregate]) -> set[str]:
        """Bring devices (as they were after their last load or save) up to the log: apply
        only the events other writers appended to them since, all in one query; the ids of
        those that moved. Cheaper than loading them again (a device's whole history) when
        another writer shares them."""
        by_id = {d.device_id: d for d in devices}
        with translated("cannot load devices"):
            rows = self.fast.events_after([(d.id, d.version) for d in by_id.values()])
        moved: set[str] = set()
        try:
            events = self._versioned(rows)
        except Exception as e:  # any decoder's or cipher's error: find the event, name it
            raise self._located(list(by_id), e) from e
        for version, event in events:
            device = _owned(by_id, event.device_id)
            device.apply(event)
            device.version = version
            moved.add(event.device_id)
        return moved

    def _versioned(self, rows: list[tuple[int, bytes]]) -> list[tuple[int, AnyDeviceEvent]]:
        """(version, event) of stored rows, their keys read in one call: devices reloaded
        after another writer moved them hold events of many data subjects, and a key read
        per event (past the key cache) was a quarter of a contended writer's time on
        PostgreSQL."""
        return list(zip([version for version, _ in rows],
                        self.codec.decode_all([state for _, state in rows]), strict=True))

    def append(self, pending: Sequence[Recorded]) -> list[LoggedEvent]:
        """As :meth:`write`, returning the events with their positions."""
        positions = self.write(pending)
        return [LoggedEvent(p, r.event) for p, r in zip(positions, pending, strict=True)]

    def write(self, pending: Sequence[Recorded], check: AppendCheck | None = None) -> list[int]:
        """Save events in one transaction, in the order given; their positions. ``check``:
        passed before anything is appended (see AppendCheck).

        The order given is the log order: callers pass events in the order the messages came,
        not grouped by device, because stitching and token ownership follow the log's order.
        Raises WriteConflict when a (device, version) is taken."""
        if not pending:
            if check is not None:
                check.run()  # a commit that records nothing is refused the same way
            return []
        events = [r.event for r in pending] if check is not None and check.inline else None
        with translated("cannot append events"):
            return self.fast.append_events(self.codec.rows(pending), check, events)

    @contextmanager
    def exclusive(self, check: AppendCheck | None = None
                  ) -> Iterator[Callable[[Sequence[Recorded]], list[int]]]:
        """Hold the store's append lock: no other writer appends until the block ends, so
        what the block reads of the log (device versions, device events) stays true until
        its events commit. Yields a function that appends events in the order given (their
        positions; committed when the block ends)."""
        rows = self.codec.rows

        def append(pending: Sequence[Recorded]) -> list[int]:
            return insert(rows(pending))

        with translated("cannot append events"), self.fast.exclusive(check) as insert:
            yield append

    def read(self, after: int, limit: int) -> Sequence[LoggedEvent]:
        """Events after a position, decoded."""
        with translated("cannot read the log"):
            rows = self.fast.read_events(after, limit)
        return self._decoded(rows)

    def read_selected(
        self, after: int, until: int, limit: int, types: AbstractSet[type[DeviceEvent]], *,
        first: bool = False,
    ) -> Sequence[LoggedEvent]:
        """Events of these types (with ``first``, also each device's first event) in
        ``after < position <= until``, decoded: a replay decodes only what it folds."""
        topics = sorted(TOPICS[t] for t in types)
        with translated("cannot read the log"):
            rows = self.fast.read_selected(after, until, limit, topics, first)
        return self._decoded(rows)

    def read_spans(
        self, spans: Sequence[Span], types: AbstractSet[type[DeviceEvent]] | None = None
    ) -> list[LoggedEvent]:
        """The events of these devices within these position ranges, in log order."""
        topics = None if types is None else sorted(TOPICS[t] for t in types)
        wanted = [(Device.create_id(d).hex, start, END if end is None else end)
                  for d, start, end in spans]
        with translated("cannot read the log"):
            rows = self.fast.read_spans(wanted, topics)
        devices = {d for d, _, _ in spans}
        return self._decoded(sorted(rows), next(iter(devices)) if len(devices) == 1 else None)

    def _decoded(self, rows: list[tuple[int, bytes]], device_id: str | None = None
                 ) -> list[LoggedEvent]:
        if not rows:
            return []
        positions, states = zip(*rows, strict=True)
        try:
            events = self.codec.decode_all(states)
        except Exception as e:  # any decoder's or cipher's error: find the event, name it
            raise self._unreadable(rows, device_id, e) from e
        # Built in C (map, zip, tuple.__new__; a NamedTuple's own constructor and _make are
        # Python functions): this runs for every event of a rebuild.
        return list(map(partial(tuple.__new__, LoggedEvent),
                        zip(positions, events, strict=True)))

    # A stored event that cannot be decoded (damaged bytes, another writer's format) is a
    # CorruptEvent naming its position and device: the decoders' own errors (msgspec's,
    # a cipher's) say neither, and leaked untyped from every later query and command.

    def _unreadable(self, rows: list[tuple[int, bytes]], device_id: str | None,
                    error: Exception) -> CorruptEvent | Exception:
        """The first of ``rows`` that does not decode, as a CorruptEvent."""
        for position, state in rows:
            try:
                self.codec.decode(state)
            except Exception as e:
                return CorruptEvent(position, device_id or _named_device(state),
                                    f"{type(e).__name__}: {e}")
        return error  # every one decodes alone: not a damaged event (re-raised as it was)

    def _located(self, device_ids: list[str], error: Exception) -> Exception:
        """A device's events did not decode: read them again with their positions, which
        raises the CorruptEvent naming the event (else ``error`` itself)."""
        try:
            for device_id in device_ids:
                self.read_spans([(device_id, 0, None)])
        except CorruptEvent as found:
            return found
        return error

    def versions(self, device_ids: Iterable[str]) -> dict[str, int]:
        """The stored version of each of these devices that has any event."""
        ids = {Device.create_id(d): d for d in device_ids}
        with translated("cannot read the log"):
            found = self.fast.device_versions(list(ids))
        return {device_id: found[a.hex] for a, device_id in ids.items() if a.hex in found}

    def head(self) -> int:
        """The last position (0 when empty)."""
        # One statement on the store's own connection: every catch-up and query asks.
        with translated("cannot read the log"):
            return self.fast.head()

    def verify(self, against: Digest | None = None) -> Verification:
        """Recompute the log's hash chain over the stored rows (see
        :mod:`idstitch.adapters.chain`); with ``against``, compare it with that digest too."""
        with translated("cannot read the log"), self.fast.chain_view() as view:
            return chain.verify(view, against)

    def digest(self) -> Digest:
        """The chain's last position and hash."""
        with translated("cannot read the log"), self.fast.chain_view() as view:
            return chain.digest(view)

    def close(self) -> None:
        """Close the recorder's connections."""
        super().close()
