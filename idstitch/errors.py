"""The public error hierarchy (psycopg-style: one root, a few precise kinds)."""

from idstitch.domain.errors import (
    ConcurrencyConflict,
    IdstitchError,
    InvalidCommand,
    NotIdentified,
    PolicyMismatch,
    StoreError,
    Suppressed,
    UnknownPerson,
)

__all__ = [
    "ConcurrencyConflict",
    "IdstitchError",
    "InvalidCommand",
    "NotIdentified",
    "PolicyMismatch",
    "StoreError",
    "Suppressed",
    "UnknownPerson",
]
