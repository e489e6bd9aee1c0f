"""The identity projection: persons, stitching, identifiers and tokens, derived from the log."""

from idstitch.projections.identity.fold import POLICIES, IdentityProjection, Policy

__all__ = ["POLICIES", "IdentityProjection", "Policy"]
