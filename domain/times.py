"""Times as the input rules take them (identity-model.md §5, §7): aware, in range, and the
client's clock corrected for skew. Re-exported by :mod:`idstitch.domain.rules`."""

from __future__ import annotations

from datetime import UTC, datetime

from idstitch.domain.errors import InvalidCommand


def check_time(field: str, value: object) -> datetime | None:
    """Timestamps must be timezone-aware: a naive time is ambiguous across devices."""
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise InvalidCommand(field, f"must be a datetime, got {type(value).__name__}")
    if value.tzinfo is UTC:
        return value
    try:
        offset = value.utcoffset()
    except (ValueError, TypeError) as e:  # a tzinfo whose offset is no offset (a day; a number)
        raise InvalidCommand(field, f"has no valid UTC offset: {e}") from e
    if offset is None:
        raise InvalidCommand(field, "must be timezone-aware")
    try:
        return value.astimezone(UTC)
    except OverflowError as e:
        # 9999-12-31T23:00-05:00 is in year 10000 in UTC: a datetime cannot hold it.
        raise InvalidCommand(field, f"is out of range once converted to UTC ({value.isoformat()}; "
                                    "years 1 to 9999)") from e


def client_time(
    timestamp: datetime | None, sent_at: datetime | None, received_at: datetime
) -> datetime:
    """The event's client time, corrected for clock skew when ``sent_at`` is known.

    Segment's rule: ``timestamp = received_at - (sent_at - timestamp)``. A correction that
    leaves datetime's range (years 1 to 9999) is bad input: ``sent_at`` is what moved it there.
    """
    if timestamp is None:
        return received_at
    if sent_at is None:
        return timestamp
    try:
        return received_at - (sent_at - timestamp)
    except OverflowError as e:
        raise InvalidCommand("sent_at", f"corrects the timestamp out of range (timestamp "
                                        f"{timestamp.isoformat()}, sent {sent_at.isoformat()}, "
                                        f"received {received_at.isoformat()}; years 1 to 9999)") from e
