"""The Workspace: the application service behind ``idstitch.open(url)``.

Commands validate their input, load the device (from a small cache, else its events), let the
aggregate record events, and append them with optimistic concurrency: when another writer got to
the device first, the device is reloaded and the command runs again. Queries read the projection
rows; in the embedded default the projection is caught up first, so a query sees the writes
that came before it.
"""

from __future__ import annotations

import gc
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from time import monotonic
from types import TracebackType
from typing import Any, NamedTuple

import msgspec

from idstitch import background
from idstitch.adapters import Stores, open_stores, segment
from idstitch.adapters.eventlog import WriteConflict
from idstitch.domain import rules
from idstitch.domain.device import Device, Recorded
from idstitch.domain.errors import (
    ConcurrencyConflict,
    IdstitchError,
    InvalidCommand,
    NotIdentified,
    UnknownPerson,
)
from idstitch.projections.device_attributes import DeviceAttributesProjection
from idstitch.projections.identity import IdentityProjection, Policy
from idstitch.projections.rows import KINDS
from idstitch.projections.store import LoggedEvent
from idstitch.projections.tracking import RowProjection, replay
from idstitch.projections.views import Device as DeviceView
from idstitch.projections.views import Merge, Profile, Reader

Clock = Callable[[], datetime]
DEVICE_CACHE_SIZE = 10_000
CLOCK_SHARE_SECONDS = 0.05
"""During ingest, messages that arrive within this long of a clock reading share it."""
INGEST_BATCH = 5000
"""Messages per ingest transaction by default. On SQLite each commit syncs, and rewrites the
index pages of the devices it touched (random ids): 1000-message batches spent ~1 s of a
100k-message ingest in commits, 5000-message ones ~0.4 s."""
CATCH_UP_EVENTS = 50_000
"""During ingest, the projection catches up after about this many events (and at the end)."""
RETRIES = 5
PARALLEL_REBUILD_EVENTS = 20_000
"""A rebuild of a log at least this long replays the device attributes in a second process
(on a SQLite file or PostgreSQL): under it, starting the process costs more than it saves."""


@contextmanager
def bulk_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while a bulk job (ingest, rebuild) runs.

    Ingest and rebuild allocate millions of short-lived, acyclic objects and hold a working set
    of hundreds of thousands of containers; the collector would scan them over and over (a
    third of rebuild time at the default thresholds, still 10-25% with a raised one). Nothing
    on these paths makes reference cycles (checked: a collection after ingesting 30,000
    messages, bad lines included, and after a rebuild finds nothing), so reference counting
    frees everything as before. The collector's previous state comes back when the job ends.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def utc_now() -> datetime:
    """The default clock."""
    return datetime.now(UTC)


class Intake(NamedTuple):
    """What a command's caller knows besides its arguments."""

    now: datetime
    """The recorded time of its events, and the received time of the clock-skew correction."""
    owned: bool
    """Its JSON values were just decoded from text and nobody else holds them: no copy needed."""


Common = tuple[str | None, datetime, datetime]
"""What every device event carries besides its own fields: message_id, timestamp, recorded_at."""


class Pending(msgspec.Struct, frozen=True):
    """A validated command waiting for its batch to be written: ``command(device, *args)``.

    ``command`` is mostly a Device method and ``args`` its arguments rather than a closure:
    one is made per command, and a closure costs a function, its cells and a frame more. For
    the same reason a Struct, not a NamedTuple (whose constructor is a Python function)."""

    device_id: str
    message_id: str | None
    command: Callable[..., bool]
    args: tuple[Any, ...]


@dataclass
class IngestReport:
    """What a bulk ingest did: counts, and each rejected message's index and reason."""

    accepted: int = 0
    duplicates: int = 0
    ignored: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)


class Workspace:
    """One event store and its projections. Use :func:`idstitch.open` to get one."""

    def __init__(
        self,
        stores: Stores,
        *,
        anonymous_merge: Policy | None = None,
        clock: Clock = utc_now,
        auto_catch_up: bool = True,
    ) -> None:
        self._stores = stores
        self.log = stores.log
        self.rows = stores.rows
        stored = stores.rows.meta(IdentityProjection.name)
        built_under = IdentityProjection.policy_of(stored)
        # No policy asked for: keep the one the rows were built under, so a read-only open never
        # re-stitches a store. A different policy asked for: that is a replay, done right here.
        self.identity = IdentityProjection(anonymous_merge or built_under or "merge")
        self.device_attributes = DeviceAttributesProjection()
        self.projections: tuple[RowProjection, ...] = (self.identity, self.device_attributes)
        """Every projection the workspace keeps, in the order they catch up."""
        self.clock = clock
        self.auto_catch_up = auto_catch_up
        self.retries = RETRIES
        """How many times a command runs before ConcurrencyConflict reaches the caller."""
        self.reader = Reader(stores.rows)
        self._devices: OrderedDict[str, Device] = OrderedDict()
        self._lock = threading.RLock()
        stale = [p.name for p in self.projections if p.needs_rebuild(stores.rows)]
        if stale:
            self.rebuild(stale)

    @property
    def url(self) -> str:
        """The store URL."""
        return self._stores.url

    @property
    def anonymous_merge(self) -> Policy:
        """``merge`` (Customer.io, Segment, PostHog) or ``switch`` (Adapty)."""
        return self.identity.policy

    def __enter__(self) -> Workspace:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the store's connections."""
        self._stores.close()

    # The write path.

    def _common(
        self, at: Intake, message_id: object, timestamp: object, sent_at: object = None
    ) -> Common:
        mid = rules.check_message_id(message_id)
        # Times as ingest decodes them (aware, in UTC) or absent are settled without a call.
        ts = (timestamp if timestamp is None or (type(timestamp) is datetime
                                                 and timestamp.tzinfo is UTC)
              else rules.check_time("timestamp", timestamp))
        if sent_at is None:
            return mid, at.now if ts is None else ts, at.now
        sent = (sent_at if type(sent_at) is datetime and sent_at.tzinfo is UTC
                else rules.check_time("sent_at", sent_at))
        return mid, rules.client_time(ts, sent, at.now), at.now

    @staticmethod
    def _pending(
        device_id: object, common: Common, command: Callable[..., bool], args: tuple[Any, ...]
    ) -> Pending:
        return Pending(rules.check_id("device_id", device_id), common[0], command, args)

    def _run_message(self, pending: list[Pending]) -> int | None:
        """Run one message's commands and append their events atomically, with retries.

        The first attempt uses cached devices. A decision that records nothing (a duplicate,
        dropped attributes) or refuses (logout of an anonymous device) is only trusted when the
        device is current: another process may have changed it, and only an append would
        otherwise notice. A refused append reloads the devices and decides again.
        """
        with self._lock:
            for attempt in range(self.retries):
                devices: dict[str, Device] = {}
                events: list[Recorded] = []
                try:
                    for p in pending:
                        device = devices.get(p.device_id)
                        if device is None:
                            device = self._device(p.device_id, fresh=attempt > 0)
                            devices[p.device_id] = device
                        p.command(device, *p.args)
                        events.extend(device.collect_events())
                    if not events and attempt == 0 and not self._all_current(devices):
                        continue
                    appended = self.log.append(events)
                except NotIdentified:
                    if attempt == 0 and not self._all_current(devices):
                        continue
                    raise
                except WriteConflict:
                    continue
                for device in devices.values():
                    self._remember(device)
                if not appended:
                    return None
                if self.auto_catch_up:
                    self.catch_up(appended)
                return appended[-1].position
        raise ConcurrencyConflict(f"device {pending[0].device_id!r}: other writers kept winning "
                                  f"({self.retries} attempts)")

    def _all_current(self, devices: dict[str, Device]) -> bool:
        stale = [d for d in devices.values() if not self.log.is_current(d)]
        for device in stale:
            self._devices.pop(device.device_id, None)
        return not stale

    def _remember(self, device: Device) -> None:
        self._devices[device.device_id] = device
        if len(self._devices) > DEVICE_CACHE_SIZE:
            self._devices.popitem(last=False)

    def _device(self, device_id: str, *, fresh: bool = False) -> Device:
        """A device to run commands on; it leaves the cache until its events are saved."""
        cached = self._devices.pop(device_id, None)
        if cached is not None and not fresh:
            return cached
        return self.log.load(device_id) or Device(device_id)

    # Bulk.

    def ingest(
        self,
        messages: Iterable[dict[str, Any] | str | bytes],
        *,
        batch_size: int = INGEST_BATCH,
        progress: Callable[[int], None] | None = None,
        parallel: bool | None = None,
    ) -> IngestReport:
        """Ingest Segment-spec messages (dicts, or JSON str/bytes lines), a transaction a batch.

        Each message is decoded and validated whole before any of it runs, so a rejected one
        leaves nothing behind; it is reported with its index and reason, and the rest go on.
        Events are appended in message order, so a batch gives what one call per message
        would, except that messages arriving within CLOCK_SHARE_SECONDS of each other share one
        clock reading: their ``recorded_at``, which is also the received time of their
        clock-skew correction. The input is streamed: only one batch is held at a time.

        ``parallel``: project in a second process while this one records (see
        :mod:`idstitch.background`). None (the default) starts it once the input proves large
        (CATCH_UP_EVENTS events), on a SQLite file or PostgreSQL; True from the start; False
        never. Either way the projections are caught up when ingest returns.
        """
        if batch_size < 1:
            raise InvalidCommand("batch_size", "must be at least 1")
        if parallel and not self._can_project_in_background():
            raise InvalidCommand("parallel", f"a second process cannot open {self.url!r}")
        with bulk_gc():
            return self._ingest(messages, batch_size, progress, parallel)

    def _can_project_in_background(self) -> bool:
        return self._stores.shared_url is not None and background.available()

    def _ingest(
        self,
        messages: Iterable[dict[str, Any] | str | bytes],
        batch_size: int,
        progress: Callable[[int], None] | None,
        parallel: bool | None,
    ) -> IngestReport:
        report = IngestReport()
        batch: list[tuple[int, list[Pending]]] = []
        unprojected: list[LoggedEvent] = []
        projector: background.BackgroundProjector | None = None
        if parallel is None and not self._can_project_in_background():
            parallel = False

        def flush(*, project: bool = False) -> None:
            nonlocal batch, projector, parallel
            if batch:
                # Envelopes only for a catch-up in this process (the child reads the log).
                unprojected.extend(self._write_batch(
                    batch, report, keep=self.auto_catch_up and projector is None))
                if progress is not None:
                    progress(len(batch))
                batch = []
            if not self.auto_catch_up:
                return
            if projector is None and parallel is not False and (
                    parallel or len(unprojected) >= CATCH_UP_EVENTS):
                parallel = False  # one attempt: if the child cannot start, project here
                assert self._stores.shared_url is not None  # checked by _can_project_...
                projector = background.BackgroundProjector(self._stores.shared_url,
                                                           self.anonymous_merge)
                if projector.failed is None:
                    unprojected.clear()  # the child reads them from the log
                else:
                    projector = None
            if projector is not None:
                if project and not projector.wait_for(self.log.head()):
                    projector = None  # it failed: everything after its position is done here
                    self.catch_up()
                return
            # The projection catches up every CATCH_UP_EVENTS events rather than every batch:
            # hot person and device rows are then rewritten once per catch-up, not per batch.
            if unprojected and (project or len(unprojected) >= CATCH_UP_EVENTS):
                self.catch_up(unprojected)
                unprojected.clear()

        # The preparer of every command segment.to_calls maps a message to.
        prepare: dict[str, Callable[..., Pending]] = {
            "identify": self._identify,
            "set_profile_attributes": self._set_profile_attributes,
            "set_device_attributes": self._set_device_attributes,
            "collect_device_attributes": self._collect_device_attributes,
            "register_device_token": self._register_device_token,
            "remove_device_token": self._remove_device_token,
        }
        decode, to_calls, prefix = segment.decode, segment.to_calls, rules.PERSON_PREFIX
        at = json_at = self._direct()
        try:
            read_at = monotonic()
            for index, raw in enumerate(messages):
                if not batch or monotonic() - read_at > CLOCK_SHARE_SECONDS:
                    # Messages that arrive close together share one clock reading (their
                    # recorded_at, and the received time of their sent_at correction); a slow
                    # stream gets a fresh one, so a later message is never timed earlier.
                    at = self._direct()
                    json_at = Intake(at.now, True)
                    read_at = monotonic()
                try:
                    calls = to_calls(decode(raw))
                    if calls is None:
                        report.ignored += 1
                        continue
                    # Values decoded from a JSON line belong to this message alone; a dict the
                    # caller passed may still be held (and changed) by the caller.
                    intake = json_at if isinstance(raw, (str, bytes)) else at
                    pending: list[Pending] = []
                    for call in calls:
                        if call.method == "identify" and str(call.args[0]).startswith(prefix):
                            # A cio_ id is checked against the persons as they stand: earlier
                            # messages of this batch may have created or retired that person.
                            flush(project=True)
                        pending.append(
                            prepare[call.method](intake, call.device_id, *call.args, **call.kwargs))
                except IdstitchError as e:
                    report.rejected.append((index, str(e)))
                    continue
                batch.append((index, pending))
                if len(batch) >= batch_size:
                    flush()
            flush(project=True)
        finally:
            # Also when the input, a callback or the store fails midway: no child outlives
            # its ingest.
            if projector is not None:
                projector.close()
        return report

    def _write_batch(
        self, batch: list[tuple[int, list[Pending]]], report: IngestReport, *, keep: bool
    ) -> list[LoggedEvent]:
        """Run a batch of validated messages; append all their events, in message order, at once.

        Returns the events appended when ``keep`` (none after a fallback, which catches up by
        itself)."""
        with self._lock:
            devices: dict[str, Device] = {}
            missing: set[str] = set()
            for _, pending in batch:
                for p in pending:
                    cached = self._devices.pop(p.device_id, None)
                    if cached is not None:
                        devices[p.device_id] = cached
                    elif p.device_id not in devices:
                        missing.add(p.device_id)
            # Devices not cached: those that exist come in one query, the rest are new.
            devices.update(self.log.load_many(missing))
            events: list[Recorded] = []
            for device in devices.values():
                device.record_into(events)  # every event of the batch, in message order
            duplicates = 0
            try:
                for _, pending in batch:
                    first = pending[0]
                    if devices[first.device_id].is_duplicate(first.message_id):
                        duplicates += 1
                        continue
                    for p in pending:
                        p.command(devices[p.device_id], *p.args)
            finally:
                for device in devices.values():
                    device.collect_events()  # each device its own pending list again
            if self.auto_catch_up and events:
                # Fail before recording anything, not after, if another process rebuilt the
                # rows under the other policy.
                self.identity.check_policy(self.rows)
            try:
                if keep:
                    appended = self.log.append(events)
                else:
                    # No projection to feed: no (position, event) envelopes to build.
                    self.log.write(events)
                    appended = []
            except WriteConflict:
                # Another writer touched one of these devices: none of the batch was written.
                # Forget what was applied and run the messages one by one, each atomically.
                self._write_one_by_one(batch, report)
                return []
            for device in devices.values():
                self._remember(device)
            report.accepted += len(batch) - duplicates
            report.duplicates += duplicates
            return appended

    def _write_one_by_one(self, batch: list[tuple[int, list[Pending]]], report: IngestReport) -> None:
        for index, pending in batch:
            first = pending[0]
            try:
                position = self._run_message(pending)
            except ConcurrencyConflict as e:
                # Only this means "nothing of the message was written". Errors after its append
                # (a failed catch-up, a policy mismatch) are not the message's fault: they stop
                # the ingest rather than report a recorded message as rejected.
                report.rejected.append((index, str(e)))
                continue
            device = self._devices.get(first.device_id)
            if position is None and device is not None and device.is_duplicate(first.message_id):
                report.duplicates += 1
            else:
                report.accepted += 1

    # Device commands. A command that a Segment message can map to validates in its preparer
    # (``_identify``, ...), which returns the Pending it becomes: the public method runs it at
    # once, ingest collects it into a batch. ``at`` carries what the caller knows: the time, and
    # whether the values are owned (freshly decoded JSON, see rules.check_attributes).

    def _direct(self) -> Intake:
        return Intake(self.clock(), False)

    def activate(
        self,
        device_id: str,
        *,
        customer_user_id: str | None = None,
        auto_track_device_attributes: bool = True,
        platform: str | None = None,
        sdk: dict[str, Any] | None = None,
        message_id: str | None = None,
        timestamp: datetime | None = None,
    ) -> int | None:
        """The SDK was configured on the device; with a customer user id it identifies too."""
        user_id = rules.check_optional_id("customer_user_id", customer_user_id)
        if user_id is not None:
            self._check_person_ref("customer_user_id", user_id)
        if not isinstance(auto_track_device_attributes, bool):
            raise InvalidCommand("auto_track_device_attributes", "must be True or False")
        plat = None if platform is None else rules.check_text("platform", platform)
        sdk_ = rules.check_attributes("sdk", sdk) if sdk is not None else None
        common = self._common(self._direct(), message_id, timestamp)
        mid, ts, now = common
        return self._run_message([self._pending(device_id, common, lambda d: d.activate(
            customer_user_id=user_id, auto_track=auto_track_device_attributes, platform=plat,
            sdk=sdk_, message_id=mid, timestamp=ts, recorded_at=now), ())])

    def identify(
        self,
        device_id: str,
        user_id: str,
        traits: dict[str, Any] | None = None,
        *,
        message_id: str | None = None,
        timestamp: datetime | None = None,
        sent_at: datetime | None = None,
    ) -> int | None:
        """Identify a person on the device: an id, an email, or ``cio_<person_id>``."""
        return self._run_message([self._identify(
            self._direct(), device_id, user_id, traits, message_id=message_id,
            timestamp=timestamp, sent_at=sent_at)])

    def _identify(
        self, at: Intake, device_id: object, user_id: object, traits: object = None, *,
        message_id: object = None, timestamp: object = None, sent_at: object = None,
    ) -> Pending:
        uid = rules.check_id("user_id", user_id)
        traits_ = rules.check_attributes("traits", traits, owned=at.owned)
        self._check_person_ref("user_id", uid)
        common = self._common(at, message_id, timestamp, sent_at)
        return self._pending(device_id, common, Device.identify, (uid, traits_, *common))

    def _check_person_ref(self, field: str, user_id: str) -> None:
        if rules.classify(user_id) != "cio":
            return
        person_id = user_id[len(rules.PERSON_PREFIX):]
        self._maybe_catch_up()
        raw = self.reader.person_row(person_id)
        if raw is None:
            raise UnknownPerson(field, person_id)
        if raw.retired_into is not None:
            raise UnknownPerson(field, person_id, f"was merged into {raw.retired_into}")
        if not raw.identified:
            raise UnknownPerson(field, person_id, "is anonymous: cio_ names identified persons")

    def set_profile_attributes(
        self,
        device_id: str,
        traits: dict[str, Any] | None = None,
        *,
        set_once: dict[str, Any] | None = None,
        unset: list[str] | None = None,
        message_id: str | None = None,
        timestamp: datetime | None = None,
        sent_at: datetime | None = None,
    ) -> int | None:
        """Change attributes of the device's current person: only the keys given."""
        return self._run_message([self._set_profile_attributes(
            self._direct(), device_id, traits, set_once=set_once, unset=unset,
            message_id=message_id, timestamp=timestamp, sent_at=sent_at)])

    def _set_profile_attributes(
        self, at: Intake, device_id: object, traits: object = None, *, set_once: object = None,
        unset: object = None, message_id: object = None, timestamp: object = None,
        sent_at: object = None,
    ) -> Pending:
        set_ = rules.check_attributes("traits", traits, owned=at.owned)
        once = rules.check_attributes("set_once", set_once, owned=at.owned)
        gone = rules.check_keys("unset", unset)
        if len(set_) + len(once) + len(gone) > rules.MAX_ATTRIBUTES:
            raise InvalidCommand("traits", f"more than {rules.MAX_ATTRIBUTES} attributes in one call")
        common = self._common(at, message_id, timestamp, sent_at)
        return self._pending(device_id, common, Device.set_profile_attributes,
                             (set_, once, gone, *common))

    def set_device_attributes(
        self,
        device_id: str,
        attributes: dict[str, Any],
        *,
        message_id: str | None = None,
        timestamp: datetime | None = None,
        sent_at: datetime | None = None,
    ) -> int | None:
        """Custom device attributes (nested JSON allowed)."""
        return self._run_message([self._set_device_attributes(
            self._direct(), device_id, attributes, message_id=message_id, timestamp=timestamp,
            sent_at=sent_at)])

    def _set_device_attributes(
        self, at: Intake, device_id: object, attributes: object, *, message_id: object = None,
        timestamp: object = None, sent_at: object = None,
    ) -> Pending:
        return self._attributes_pending(at, "attributes", Device.set_device_attributes,
                                        device_id, attributes, message_id, timestamp, sent_at)

    def _attributes_pending(
        self, at: Intake, field: str, command: Callable[..., bool], device_id: object,
        attributes: object, message_id: object, timestamp: object, sent_at: object,
    ) -> Pending:
        """A device-attributes command (custom or collected: the same checks, another event)."""
        attrs = rules.check_attributes(field, attributes, allow_none=False, owned=at.owned)
        common = self._common(at, message_id, timestamp, sent_at)
        return self._pending(device_id, common, command, (attrs, *common))

    def collect_device_attributes(
        self,
        device_id: str,
        context: dict[str, Any],
        *,
        message_id: str | None = None,
        timestamp: datetime | None = None,
        sent_at: datetime | None = None,
    ) -> int | None:
        """Auto-collected attributes; dropped when the device turned auto-tracking off."""
        return self._run_message([self._collect_device_attributes(
            self._direct(), device_id, context, message_id=message_id, timestamp=timestamp,
            sent_at=sent_at)])

    def _collect_device_attributes(
        self, at: Intake, device_id: object, context: object, *, message_id: object = None,
        timestamp: object = None, sent_at: object = None,
    ) -> Pending:
        return self._attributes_pending(at, "context", Device.collect_device_attributes,
                                        device_id, context, message_id, timestamp, sent_at)

    def register_device_token(
        self,
        device_id: str,
        token: str,
        *,
        platform: str | None = None,
        message_id: str | None = None,
        timestamp: datetime | None = None,
        sent_at: datetime | None = None,
    ) -> int | None:
        """The device's push token; a token held by another device moves here."""
        return self._run_message([self._register_device_token(
            self._direct(), device_id, token, platform=platform, message_id=message_id,
            timestamp=timestamp, sent_at=sent_at)])

    def _register_device_token(
        self, at: Intake, device_id: object, token: object, *, platform: object = None,
        message_id: object = None, timestamp: object = None, sent_at: object = None,
    ) -> Pending:
        tok = rules.check_text("token", token)
        plat = None if platform is None else rules.check_text("platform", platform)
        common = self._common(at, message_id, timestamp, sent_at)
        return self._pending(device_id, common, Device.register_device_token,
                             (tok, plat, *common))

    def remove_device_token(
        self,
        device_id: str,
        token: str,
        *,
        reason: str = "deleted",
        message_id: str | None = None,
        timestamp: datetime | None = None,
    ) -> int | None:
        """The token is dead (the push provider said so) or the app deleted it."""
        return self._run_message([self._remove_device_token(
            self._direct(), device_id, token, reason=reason, message_id=message_id,
            timestamp=timestamp)])

    def _remove_device_token(
        self, at: Intake, device_id: object, token: object, *, reason: object = "deleted",
        message_id: object = None, timestamp: object = None,
    ) -> Pending:
        tok = rules.check_text("token", token)
        why = rules.check_text("reason", reason)
        common = self._common(at, message_id, timestamp)
        return self._pending(device_id, common, Device.remove_device_token,
                             (tok, why, *common))

    def record_push_status(
        self,
        device_id: str,
        status: str,
        *,
        message_id: str | None = None,
        timestamp: datetime | None = None,
    ) -> int | None:
        """``last_status`` of the device's token: sent, bounced or suppressed."""
        st = rules.check_text("status", status, allowed=rules.PUSH_STATUSES)
        common = self._common(self._direct(), message_id, timestamp)
        return self._run_message([self._pending(
            device_id, common, Device.record_push_status, (st, *common))])

    def clear_identify(
        self, device_id: str, *, message_id: str | None = None, timestamp: datetime | None = None
    ) -> int | None:
        """Stop identifying: the device starts a new anonymous session; its token stays."""
        common = self._common(self._direct(), message_id, timestamp)
        return self._run_message([self._pending(
            device_id, common, Device.clear_identify, common)])

    def logout(
        self, device_id: str, *, message_id: str | None = None, timestamp: datetime | None = None
    ) -> int | None:
        """Adapty's logout: as clear_identify, but an anonymous device raises NotIdentified."""
        common = self._common(self._direct(), message_id, timestamp)
        return self._run_message([self._pending(device_id, common, lambda d: (
            d.clear_identify(*common, require_identified=True)), ())])

    # Projections.

    def catch_up(self, recent: Sequence[LoggedEvent] = ()) -> int:
        """Bring every projection up to the head of the log; the position reached."""
        with self._lock:
            return min([p.catch_up(self.log, self.rows, recent=recent) for p in self.projections])

    def rebuild(
        self,
        names: list[str] | None = None,
        progress: Callable[[int], None] | None = None,
        *,
        parallel: bool | None = None,
    ) -> int:
        """Replay the log from position 0 into fresh projections (same result as incremental).

        ``names``: the projections to rebuild (``identity``, ``device_attributes``); None for
        all. ``progress`` is called with the number of log positions replayed since its last
        call. ``parallel``: replay the device attributes in a second process while this one
        replays the identity projection (see :mod:`idstitch.background`); None (the default)
        does so for a log of PARALLEL_REBUILD_EVENTS or more on a SQLite file or PostgreSQL,
        False never. The result is the same either way.
        """
        known = {p.name for p in self.projections}
        if names is not None and set(names) - known:
            raise InvalidCommand("names", f"unknown projections {sorted(set(names) - known)}, "
                                          f"expected some of {sorted(known)}")
        if parallel and not self._can_project_in_background():
            raise InvalidCommand("parallel", f"a second process cannot open {self.url!r}")
        chosen = [p for p in self.projections if names is None or p.name in names]
        with self._lock, bulk_gc():
            # One transaction: with every kind in it, SQLite drops whole pages at once.
            self.rows.reset([p.name for p in chosen], [k for p in chosen for k in p.kinds])
            for projection in chosen:
                projection.forget_cache()
            until = self.log.head()
            helper: background.BackgroundProjector | None = None
            if len(chosen) > 1 and parallel is not False and self._can_project_in_background() \
                    and (parallel or until >= PARALLEL_REBUILD_EVENTS):
                assert self._stores.shared_url is not None  # checked by _can_project_...
                helper = background.BackgroundProjector(
                    self._stores.shared_url, self.anonymous_merge,
                    replay=[p.name for p in chosen[1:]], until=until)
            try:
                here = chosen if helper is None else chosen[:1]
                replay(here, self.log, self.rows, until, progress)
                if helper is not None and not helper.stop(until):
                    # The child failed: what it committed stays, the rest is replayed here.
                    replay(chosen[1:], self.log, self.rows, until)
            finally:
                if helper is not None:
                    helper.close()
            return self.catch_up()

    def _maybe_catch_up(self) -> None:
        if self.auto_catch_up:
            self.catch_up()

    # Queries.

    def profile(self, identifier: str) -> Profile | None:
        """The person an identifier finds (user id, email, cio_<id>, person id, anonymous id)."""
        self._maybe_catch_up()
        with self.rows.snapshot() as rows:
            return Reader(rows).profile(identifier)

    def profile_of_device(self, device_id: str) -> Profile | None:
        """The device's current person."""
        self._maybe_catch_up()
        with self.rows.snapshot() as rows:
            return Reader(rows).profile_of_device(device_id)

    def device(self, device_id: str) -> DeviceView | None:
        """A device: token, platform, attributes, last_used, last_status."""
        self._maybe_catch_up()
        with self.rows.snapshot() as rows:
            return Reader(rows).device(device_id)

    def merges(self, identifier: str) -> list[Merge]:
        """Every conversion, merge and switch of the person, with the position of its cause."""
        self._maybe_catch_up()
        with self.rows.snapshot() as rows:
            return Reader(rows).merges(identifier)

    def dump(self) -> dict[str, list[tuple[str, bytes]]]:
        """Every projection row, by kind: two workspaces agree exactly when their dumps do."""
        self._maybe_catch_up()
        return {kind: list(self.rows.scan(kind)) for kind in KINDS}


def open(
    url: str | None = None,
    *,
    anonymous_merge: Policy | None = None,
    clock: Clock | None = None,
    auto_catch_up: bool = True,
) -> Workspace:
    """Open a workspace: ``memory:``, ``sqlite:///path`` (default ``./idstitch.db``),
    or ``postgresql://user:pw@host:port/db`` (``?schema=name`` for a schema of its own).
    ``IDSTITCH_DATABASE_URL`` is read when no url is given.

    ``anonymous_merge``: ``"merge"`` (Customer.io, Segment, PostHog) or ``"switch"`` (Adapty).
    Left out, a new store uses ``"merge"`` and an existing one keeps the policy it was built
    under; a different policy replays the log into the projection (a rebuild)."""
    if anonymous_merge is not None and anonymous_merge not in ("merge", "switch"):
        raise InvalidCommand("anonymous_merge", f"must be 'merge' or 'switch', got {anonymous_merge!r}")
    stores = open_stores(url)
    try:
        return Workspace(stores, anonymous_merge=anonymous_merge, clock=clock or utc_now,
                         auto_catch_up=auto_catch_up)
    except BaseException:
        stores.close()
        raise


__all__ = ["IngestReport", "Workspace", "open"]
