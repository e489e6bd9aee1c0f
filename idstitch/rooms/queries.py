"""The Workspace's room for reads (identity-model.md §6): profiles, devices, merges, the audit,
and the verifiable log (docs/explanation/verifiable-log.md).
"""

from __future__ import annotations

from datetime import datetime

from idstitch.adapters.eventlog import DeviceLog
from idstitch.domain.verification import Digest, Verification, check_digest
from idstitch.projections.audit import Change, Provenance
from idstitch.projections.views import Device, Merge, Profile
from idstitch.service.arguments import checked_methods
from idstitch.service.queries import Queries


@checked_methods
class QueriesAndAudit:
    """What :class:`Workspace <idstitch.Workspace>` answers. Each query asks the query
    service; in the embedded default the projections are caught up first."""

    _queries: Queries
    log: DeviceLog

    def profile(self, identifier: str) -> Profile | None:
        """The person an identifier finds (user id, email, cio_<id>, person id, anonymous id)."""
        return self._queries.profile(identifier)

    def profile_of_device(self, device_id: str) -> Profile | None:
        """The device's current person."""
        return self._queries.profile_of_device(device_id)

    def device(self, device_id: str) -> Device | None:
        """A device: token, platform, attributes, last_used, last_status."""
        return self._queries.device(device_id)

    def merges(self, identifier: str) -> list[Merge]:
        """Every conversion, merge and switch of the person, with the position of its cause."""
        return self._queries.merges(identifier)

    # The audit.

    def history(self, identifier: str) -> list[Change]:
        """Every change that shaped the person the identifier finds, in log order: its own
        events and those of every person merged into it, from before the merge."""
        return self._queries.history(identifier)

    def profile_as_of(self, identifier: str, at: int | datetime) -> Profile | None:
        """The profile as the log stood at a position (up to and including it) or at an aware
        datetime of recorded time; the identifier resolves as it did then."""
        return self._queries.profile_as_of(identifier, at)

    def explain(self, identifier: str, attribute: str) -> Provenance | None:
        """The event that set the person's current value of ``attribute``, and the changes of
        that key that lost to it; None when the person has no such attribute."""
        return self._queries.explain(identifier, attribute)

    # The verifiable log.

    def verify(self, against: Digest | None = None) -> Verification:
        """Recompute the hash chain over the stored log and name the first position where it
        breaks (a changed byte, a deleted, moved or inserted event). With ``against``, a
        :class:`Digest` taken earlier and kept elsewhere, also prove that the log up to its
        position is the log it was taken of, even if the rows and their hashes were rewritten."""
        return self.log.verify(None if against is None else check_digest("against", against))

    def digest(self) -> Digest:
        """The chain's last position and hash: keep it outside the store, and verify against
        it later."""
        return self.log.digest()

    def dump(self) -> dict[str, list[tuple[str, bytes]]]:
        """Every projection row, by kind: two workspaces agree exactly when their dumps do."""
        return self._queries.dump()
