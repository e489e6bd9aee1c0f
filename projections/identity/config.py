"""The identity projection's configuration, and how a stored tracking meta names it."""

from __future__ import annotations

from typing import Literal

import msgspec
from idstitch.projections.identity.persons import IdScheme

Policy = Literal["merge", "switch"]
POLICIES: tuple[Policy, ...] = ("merge", "switch")
DEFAULT_POLICY: Policy = "merge"
"""The policy of a store that records none (Customer.io, Segment, PostHog)."""


class IdentityConfig(msgspec.Struct, frozen=True):
    """The identity projection's configuration: the anonymous-merge policy and id scheme."""

    policy: Policy
    ids: IdScheme


def policy_of(meta: str | None) -> Policy | None:
    """The policy recorded in a tracking meta, if any."""
    settings = dict(part.partition("=")[::2] for part in (meta or "").split())
    value = settings.get("anonymous_merge")
    return "switch" if value == "switch" else "merge" if value == "merge" else None


def ids_of(meta: str | None) -> IdScheme:
    """The id scheme of rows committed under ``meta``: rows built before ids were derived
    from events (format 3 and older, no ``ids=``) keep the position scheme."""
    settings = dict(part.partition("=")[::2] for part in (meta or "").split())
    if meta is None or settings.get("ids") == "event":
        return "event"
    if settings.get("ids") == "position" or int(settings.get("rows", "0") or 0) <= 3:
        return "position"
    return "event"
