"""The identity projection: persons, stitching, identifiers and tokens, derived from the log."""

from idstitch.projections.identity.config import DEFAULT_POLICY, POLICIES, Policy
from idstitch.projections.identity.fold import IdentityProjection

__all__ = ["DEFAULT_POLICY", "POLICIES", "IdentityProjection", "Policy"]
