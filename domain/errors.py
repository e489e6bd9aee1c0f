"""The error hierarchy: one root, a few precise kinds.

Defined in the domain so the rules can raise them without importing the front door;
``idstitch.errors`` re-exports them as the public module.
"""

from __future__ import annotations


class IdstitchError(Exception):
    """Root of every error idstitch raises on purpose."""


class InvalidCommand(IdstitchError, ValueError):
    """Bad input: names the field and the reason. Nothing was recorded."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class NotIdentified(IdstitchError):
    """The device has nobody identified on it (Adapty's logout of an anonymous device)."""

    def __init__(self, device_id: str) -> None:
        self.device_id = device_id
        super().__init__(f"device {device_id!r} is anonymous: nobody to log out")


class UnknownPerson(IdstitchError, LookupError):
    """A ``cio_<person_id>`` names no live person (unknown, or merged into another)."""

    def __init__(self, field: str, person_id: str, why: str = "is unknown", *,
                 message: str | None = None) -> None:
        self.field = field
        self.person_id = person_id
        super().__init__(f"{field}: {message}" if message is not None
                         else f"{field}: person {person_id!r} {why}")


class Suppressed(IdstitchError):
    """The identifier was forgotten (right to erasure); traffic for it is refused."""


class ConcurrencyConflict(IdstitchError):
    """Concurrent writers kept changing the same device; retries ran out."""


class StoreError(IdstitchError):
    """The database failed (unreachable, locked, unwritable); the driver's error is the cause."""


class CorruptEvent(StoreError):
    """A stored event cannot be read (its bytes were damaged or written by something else).

    ``position``: where it sits in the log; ``device_id``: the device it belongs to, when the
    damaged bytes still name it (else None). The rest of the log stays readable: catch-ups stop
    just before it, queries answer from the rows as far as they got, and only what reads this
    event (its device's commands, its persons' audit, a rebuild) raises this error."""

    def __init__(self, position: int, device_id: str | None, reason: str) -> None:
        self.position = position
        self.device_id = device_id
        self.reason = reason
        device = "an unknown device" if device_id is None else f"device {device_id!r}"
        super().__init__(f"the event at position {position} (of {device}) cannot be read: "
                         f"{reason}")


class CorruptRow(StoreError):
    """A projection row cannot be read. Queries and catch-ups rebuild the projection that owns
    it and go on; this is raised only when the rebuild did not repair it."""

    def __init__(self, row_type: str, reason: str) -> None:
        self.row_type = row_type
        self.reason = reason
        self.row_class: object = None
        """The row's class (which projections own it), when known."""
        super().__init__(f"a stored {row_type} row cannot be read: {reason}")


class WriteLanded(IdstitchError):
    """A command's events were recorded, at ``position`` (its last event), but bringing the
    projections up to them failed afterwards (``__cause__`` says why: a store error, rows
    rebuilt under another policy meanwhile). The write stands: do not repeat the command
    (without a message id it would be recorded twice); the next query or ``catch_up()``
    projects it."""

    def __init__(self, position: int, cause: BaseException) -> None:
        self.position = position
        super().__init__(f"the write landed at log position {position}, but the projections "
                         f"could not follow it: {cause}")


class PolicyMismatch(IdstitchError):
    """The projection rows were built under another ``anonymous_merge`` policy."""


class ProjectionFailed(IdstitchError):
    """A custom projection's handler raised: its batch was rolled back with its tracking, and
    it stays registered at its last committed position (the next catch-up resumes there).
    The handler's exception is the cause (``__cause__``)."""

    def __init__(self, projection: str, position: int, cause: BaseException) -> None:
        self.projection = projection
        self.position = position
        self.cause = cause
        super().__init__(f"projection {projection!r} failed at position {position}: "
                         f"{type(cause).__name__}: {cause}")


class ProjectionsBehind(IdstitchError, TimeoutError):
    """``wait_for`` timed out: some projection has not reached the position yet (the
    projecting process is down, slow, or a custom projection keeps failing).

    ``position`` is what was waited for, ``reached`` the lowest position every projection has
    reached, ``behind`` how far that is behind (``position - reached``), ``lagging`` each
    projection short of it with its position."""

    def __init__(self, position: int, reached: int, lagging: dict[str, int], waited: float) -> None:
        self.position = position
        self.reached = reached
        self.behind = position - reached
        self.lagging = dict(lagging)
        self.waited = waited
        names = ", ".join(f"{n} at {p}" for n, p in sorted(self.lagging.items()))
        super().__init__(f"projections did not reach position {position} within {waited:g} s: "
                         f"{self.behind} positions behind ({names}); is `idstitch project` "
                         "running?")
