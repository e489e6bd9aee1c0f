"""The public error hierarchy (psycopg-style: one root, a few precise kinds)."""

from idstitch.domain.errors import (
    ConcurrencyConflict,
    IdstitchError,
    InvalidCommand,
    NotIdentified,
    PolicyMismatch,
    ProjectionFailed,
    StoreError,
    Suppressed,
    UnknownPerson,
    WriteLanded,
)
from idstitch.service.ingest import IngestInterrupted

__all__ = [
    "ConcurrencyConflict",
    "IdstitchError",
    "IngestInterrupted",
    "InvalidCommand",
    "NotIdentified",
    "PolicyMismatch",
    "ProjectionFailed",
    "StoreError",
    "Suppressed",
    "UnknownPerson",
    "WriteLanded",
]
