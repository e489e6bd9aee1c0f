"""The Workspace's room for what devices send: one command per SDK call, or a stream of
Segment messages.

Each command method builds a command (:mod:`idstitch.domain.commands`) and hands it to the
message bus, which checks it where it enters (:mod:`idstitch.service.checks`); ``ingest`` hands
the stream to the ingest service.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from idstitch import bootstrap
from idstitch.domain import commands as c
from idstitch.service.arguments import checked_methods, entering
from idstitch.service.bus import MessageBus
from idstitch.service.ingest import INGEST_BATCH
from idstitch.service.ingest_report import IngestReport


@checked_methods
class DeviceTraffic:
    """The device commands (identity-model.md §2) and bulk ingest of :class:`Workspace
    <idstitch.Workspace>`."""

    _services: bootstrap.Services
    _bus: MessageBus

    # Each command returns the log position of the last event it recorded, or None when it
    # recorded nothing.

    @entering
    def activate(
        self, device_id: str, *, customer_user_id: str | None = None,
        auto_track_device_attributes: bool = True, platform: str | None = None,
        sdk: dict[str, Any] | None = None, message_id: str | None = None,
        timestamp: datetime | None = None,
    ) -> int | None:
        """The SDK was configured on the device; with a customer user id it identifies too."""
        return self._bus.handle(c.Activate(
            device_id=device_id, customer_user_id=customer_user_id,
            auto_track_device_attributes=auto_track_device_attributes, platform=platform,
            sdk=sdk, message_id=message_id, timestamp=timestamp))

    @entering
    def identify(
        self, device_id: str, user_id: str, traits: dict[str, Any] | None = None, *,
        message_id: str | None = None, timestamp: datetime | None = None,
        sent_at: datetime | None = None, received_at: datetime | None = None,
    ) -> int | None:
        """Identify a person on the device: an id, an email, or ``cio_<person_id>``."""
        return self._bus.handle(c.Identify(
            device_id=device_id, user_id=user_id, traits=traits, message_id=message_id,
            timestamp=timestamp, sent_at=sent_at, received_at=received_at))

    @entering
    def set_profile_attributes(
        self, device_id: str, traits: dict[str, Any] | None = None, *,
        set_once: dict[str, Any] | None = None, unset: list[str] | None = None,
        message_id: str | None = None, timestamp: datetime | None = None,
        sent_at: datetime | None = None, received_at: datetime | None = None,
    ) -> int | None:
        """Change attributes of the device's current person: only the keys given."""
        return self._bus.handle(c.SetProfileAttributes(
            device_id=device_id, traits=traits, set_once=set_once, unset=unset,
            message_id=message_id, timestamp=timestamp, sent_at=sent_at, received_at=received_at))

    @entering
    def set_device_attributes(
        self, device_id: str, attributes: dict[str, Any], *, message_id: str | None = None,
        timestamp: datetime | None = None, sent_at: datetime | None = None,
        received_at: datetime | None = None,
    ) -> int | None:
        """Custom device attributes (nested JSON allowed)."""
        return self._bus.handle(c.SetDeviceAttributes(
            device_id=device_id, attributes=attributes, message_id=message_id,
            timestamp=timestamp, sent_at=sent_at, received_at=received_at))

    @entering
    def collect_device_attributes(
        self, device_id: str, context: dict[str, Any], *, message_id: str | None = None,
        timestamp: datetime | None = None, sent_at: datetime | None = None,
        received_at: datetime | None = None,
    ) -> int | None:
        """Auto-collected attributes; dropped when the device turned auto-tracking off."""
        return self._bus.handle(c.CollectDeviceAttributes(
            device_id=device_id, context=context, message_id=message_id, timestamp=timestamp,
            sent_at=sent_at, received_at=received_at))

    @entering
    def register_device_token(
        self, device_id: str, token: str, *, platform: str | None = None,
        message_id: str | None = None, timestamp: datetime | None = None,
        sent_at: datetime | None = None, received_at: datetime | None = None,
    ) -> int | None:
        """The device's push token; a token held by another device moves here."""
        return self._bus.handle(c.RegisterDeviceToken(
            device_id=device_id, token=token, platform=platform, message_id=message_id,
            timestamp=timestamp, sent_at=sent_at, received_at=received_at))

    @entering
    def remove_device_token(
        self, device_id: str, token: str, *, reason: str = "deleted",
        message_id: str | None = None, timestamp: datetime | None = None,
    ) -> int | None:
        """The token is dead (the push provider said so) or the app deleted it."""
        return self._bus.handle(c.RemoveDeviceToken(
            device_id=device_id, token=token, reason=reason, message_id=message_id,
            timestamp=timestamp))

    @entering
    def record_push_status(
        self, device_id: str, status: str, *, message_id: str | None = None,
        timestamp: datetime | None = None,
    ) -> int | None:
        """``last_status`` of the device's token: sent, bounced or suppressed."""
        return self._bus.handle(c.RecordPushStatus(
            device_id=device_id, status=status, message_id=message_id, timestamp=timestamp))

    @entering
    def clear_identify(
        self, device_id: str, *, message_id: str | None = None, timestamp: datetime | None = None
    ) -> int | None:
        """Stop identifying: the device starts a new anonymous session; its token stays."""
        return self._bus.handle(c.ClearIdentify(
            device_id=device_id, message_id=message_id, timestamp=timestamp))

    @entering
    def logout(
        self, device_id: str, *, message_id: str | None = None, timestamp: datetime | None = None
    ) -> int | None:
        """Adapty's logout: as clear_identify, but an anonymous device raises NotIdentified."""
        return self._bus.handle(c.Logout(
            device_id=device_id, message_id=message_id, timestamp=timestamp))

    # Bulk.

    def ingest(
        self, messages: Iterable[dict[str, Any] | str | bytes], *, batch_size: int = INGEST_BATCH,
        progress: Callable[[int], None] | None = None, parallel: bool | None = None,
    ) -> IngestReport:
        """Ingest Segment-spec messages (dicts, or JSON str/bytes lines), a transaction a batch.

        An item may also be a batch envelope (``{"batch": [...], "sentAt": ...}``): its
        messages are ingested one by one, each given the envelope's ``sentAt`` unless it has its
        own. Blank lines are skipped (counted in ``IngestReport.blank``, given no index).
        Each message is validated whole before any of it runs, so a rejected one leaves nothing
        behind; it is reported with its index (among the messages, an envelope's counted one by
        one) and reason, and the rest go on. Messages arriving
        within 50 ms of each other share one clock reading (their ``recorded_at``, and the
        received time of a ``sentAt`` correction when the message has no ``receivedAt``).
        ``progress`` is called with the number of messages of each committed batch (at most
        ``batch_size``: when a second process may project, the first batch is 4,000 messages
        and the last is committed in pieces of 2,500).

        ``parallel``: project in a second process while this one records. None (the default)
        starts it once the input proves large (4,000 messages), on a SQLite file or
        PostgreSQL, and does without it if the input ends before it is ready; True from the
        start, and waits for it; False never. Either way the projections are caught up when
        ingest returns.
        """
        return self._services.ingester.ingest(messages, batch_size, progress, parallel)
