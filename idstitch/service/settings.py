"""What a workspace's services share and a caller may change while it is open."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime


@dataclass
class Settings:
    """The clock and the read-your-writes switch, one object shared by the services."""

    clock: Callable[[], datetime]
    """Stamps ``recorded_at`` (and is the received time of a skew correction by default)."""
    auto_catch_up: bool = True
    """Commands catch the projections up after their append, queries before they read."""
    external: bool = False
    """Another process keeps the projections (``projections="external"``): this workspace
    appends only, and reads say how far behind they are."""
