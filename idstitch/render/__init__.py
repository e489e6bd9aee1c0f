"""Rich renderings of query results, shared by the command-line tools.

Every function takes plain query results (:class:`~idstitch.Profile`, :class:`~idstitch.Merge`,
:class:`~idstitch.Change`, :class:`~idstitch.Provenance`) and returns a rich renderable; none of
them touches a workspace, so any command (profile, demo, history, explain, ingest reports) can
reuse them and tests can render without a store.
"""

from idstitch.render.audit import (
    change_text,
    data_summary,
    history_renderable,
    merged_in,
    provenance_renderable,
    why_lost,
    written,
)
from idstitch.render.jsonstyle import to_json, to_json_bytes
from idstitch.render.profiles import (
    attributes_renderable,
    device_panel,
    device_renderable,
    devices_renderable,
    format_time,
    format_value,
    merges_blocks,
    merges_table,
    person_label,
    profile_renderable,
)

__all__ = [
    "attributes_renderable",
    "change_text",
    "data_summary",
    "device_panel",
    "device_renderable",
    "devices_renderable",
    "format_time",
    "format_value",
    "history_renderable",
    "merged_in",
    "merges_blocks",
    "merges_table",
    "person_label",
    "profile_renderable",
    "provenance_renderable",
    "to_json",
    "to_json_bytes",
    "why_lost",
    "written",
]
