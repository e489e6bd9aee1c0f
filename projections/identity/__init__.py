"""The identity projection: persons, stitching, identifiers and tokens, derived from the log."""

from idstitch.projections.identity.config import POLICIES, Policy
from idstitch.projections.identity.fold import IdentityProjection

__all__ = ["POLICIES", "IdentityProjection", "Policy"]
