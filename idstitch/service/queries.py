"""The read side of the workspace: profiles, devices, merges, and every projection row.

In the embedded default (``auto_catch_up``) every query first brings the projections up to the
head of the log, so it sees every event committed before it (read-your-writes, also across
processes sharing the store). Reads then run in one snapshot of the projection store.
"""

from __future__ import annotations

from idstitch.projections.identity.rows import PersonRow
from idstitch.projections.store import ProjectionStore
from idstitch.projections.views import Device, Merge, Profile, Reader
from idstitch.service.projecting import Projector
from idstitch.service.settings import Settings


class Queries:
    """Answers the identity queries from the projection rows."""

    def __init__(self, rows: ProjectionStore, projector: Projector, settings: Settings) -> None:
        self.rows = rows
        self.projector = projector
        self.settings = settings

    def settle(self) -> None:
        """Catch the projections up first, when the workspace keeps them current."""
        if self.settings.auto_catch_up:
            self.projector.catch_up()

    def person_row(self, person_id: str) -> PersonRow | None:
        """The raw person row of a person id (not following merges)."""
        with self.rows.snapshot() as rows:
            return Reader(rows).person_row(person_id)

    def profile(self, identifier: str) -> Profile | None:
        """The person an identifier finds (user id, email, cio_<id>, person id, anonymous id)."""
        self.settle()
        with self.rows.snapshot() as rows:
            return Reader(rows).profile(identifier)

    def profile_of_device(self, device_id: str) -> Profile | None:
        """The device's current person."""
        self.settle()
        with self.rows.snapshot() as rows:
            return Reader(rows).profile_of_device(device_id)

    def device(self, device_id: str) -> Device | None:
        """A device: token, platform, attributes, last_used, last_status."""
        self.settle()
        with self.rows.snapshot() as rows:
            return Reader(rows).device(device_id)

    def merges(self, identifier: str) -> list[Merge]:
        """Every conversion, merge and switch of the person, with the position of its cause."""
        self.settle()
        with self.rows.snapshot() as rows:
            return Reader(rows).merges(identifier)

    def dump(self) -> dict[str, list[tuple[str, bytes]]]:
        """Every projection row, by kind: two workspaces agree exactly when their dumps do."""
        self.settle()
        return {kind: list(self.rows.scan(kind)) for kind in self.projector.registry.kinds}
