"""idstitch: the event-sourced identity model behind a mobile-SDK backend.

Every identify, attribute change, token registration and clear is an immutable event on a
per-device log; projections answer who each person is, on which devices, with which attributes,
and how we came to believe it.

    import idstitch
    with idstitch.open("sqlite:///identity.db") as ws:
        ws.identify("device-1", "user-42", {"first_name": "Dana"})
        print(ws.profile("user-42"))
"""

from idstitch import errors
from idstitch.domain.ids import server_stream_id
from idstitch.domain.verification import Digest, Verification
from idstitch.projections.audit import Change, Provenance, Refused
from idstitch.projections.custom import Projection, ProjectionDB
from idstitch.projections.views import Device, Merge, Profile
from idstitch.service.erasure import ShredReport
from idstitch.service.following import ProjectionStatus
from idstitch.service.ingest_report import IngestReport
from idstitch.workspace import Workspace, open

__all__ = ["Change", "Device", "Digest", "IngestReport", "Merge", "Profile", "Projection",
           "ProjectionDB", "ProjectionStatus", "Provenance", "Refused", "ShredReport", "Verification",
           "Workspace",
           "errors", "open", "server_stream_id"]
__version__ = "0.1.0"
