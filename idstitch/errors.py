"""The public error hierarchy (psycopg-style: one root, a few precise kinds)."""

from idstitch.domain.errors import (
    ConcurrencyConflict,
    CorruptEvent,
    CorruptRow,
    IdstitchError,
    InvalidCommand,
    NotIdentified,
    PolicyMismatch,
    ProjectionFailed,
    ProjectionsBehind,
    StoreError,
    Suppressed,
    UnknownPerson,
    WriteLanded,
)
from idstitch.service.ingest_report import IngestInterrupted

__all__ = [
    "ConcurrencyConflict",
    "CorruptEvent",
    "CorruptRow",
    "IdstitchError",
    "IngestInterrupted",
    "InvalidCommand",
    "NotIdentified",
    "PolicyMismatch",
    "ProjectionFailed",
    "ProjectionsBehind",
    "StoreError",
    "Suppressed",
    "UnknownPerson",
    "WriteLanded",
]
