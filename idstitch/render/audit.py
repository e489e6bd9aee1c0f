"""Renderings of the audit: a person's timeline of Changes, and where a value came from.

The timeline reads like the demo's stories: a block per event with the client's time, the
device and the event, then what it changed (``key: old -> new``), the merges it caused and the
identifiers it was refused. Person ids are shown by a label when the caller has one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from idstitch.projections.audit import Change, Provenance
from idstitch.projections.views import Merge
from idstitch.render.jsonstyle import printable, to_json
from idstitch.render.profiles import KIND_STYLES, format_time, format_value, labelled

ABSENT = "(none)"
"""How an attribute that had no value (or has none after a removal) is shown."""
ATTRIBUTE_FIELDS = ("traits", "set", "set_once", "unset")
"""The fields of an event's data that write person attributes."""
DATA_WIDTH = 110
"""An event's data is cut to about this many characters: enough to recognise the call."""


def data_summary(data: Mapping[str, Any], width: int | None = DATA_WIDTH) -> str:
    """An event's own fields in one line, ``key=value``, empty ones left out, cut at ``width``
    (None: whole, as piped output is)."""
    parts = [f"{printable(key)}={printable(value) if isinstance(value, str) else to_json(value)}"
             for key, value in data.items() if value not in (None, {}, [])]
    line = " ".join(parts)
    return line if width is None or len(line) <= width else line[: width - 1] + "…"


def _value(value: Any, style: str = "") -> Text:
    return Text(ABSENT, style="dim") if value is None else Text(format_value(value), style=style)


def merged_in(person_id: str) -> Text:
    """The mark of an event made on a person merged into this one later.

    Only such a person has events of its own in another person's history; its short id is
    the one the merge line that absorbed it shows."""
    return Text(f"on person {person_id[:8]}, merged in later", style="yellow")


def change_text(change: Change, *, person_id: str, labels: Mapping[str, str],
                width: int | None = DATA_WIDTH) -> Text:
    """One Change as a block of lines (without its position)."""
    text = Text.assemble((format_time(change.timestamp), "bold"), "  ",
                         (printable(change.device_id or "-"), "cyan"), "  ", (change.event, "bold"))
    notes: list[Text] = []
    recorded = format_time(change.recorded_at)
    if recorded != format_time(change.timestamp):
        notes.append(Text(f"recorded {recorded}", style="dim"))
    if change.message_id:
        notes.append(Text(f"message {printable(change.message_id)}", style="dim"))
    if change.person_id != person_id:
        notes.append(merged_in(change.person_id))
    if notes:
        text.append("\n")
        text.append_text(Text(" · ", style="dim").join(notes))
    summary = data_summary(change.data, width)
    if summary:
        text.append("\n")
        text.append(summary, style="dim")
    if not change.changes and any(change.data.get(k) for k in ATTRIBUTE_FIELDS):
        # A write that lost (a late arrival), a value written again, set_once of a held key.
        text.append("\n")
        text.append("(no attribute changed)", style="dim")
    for key, old, new in change.changes:
        text.append("\n")
        text.append_text(Text.assemble((printable(key), "bold"), ": ", _value(old), " -> ",
                                       _value(new, "green")))
    for merge in change.merges:
        text.append("\n")
        text.append_text(_merge_line(merge, labels))
    for refused in change.refused:
        text.append("\n")
        held = (Text.assemble(": ", labelled(refused.held_by, labels))
                if refused.held_by else Text(""))
        text.append_text(Text.assemble(("✗ refused ", "bold red"), refused.kind, " ",
                                       printable(refused.value), ": ", refused.reason, held))
    return text


def _merge_line(merge: Merge, labels: Mapping[str, str]) -> Text:
    style = KIND_STYLES.get(merge.kind, "")
    return Text.assemble(("◆ ", style), (merge.kind, f"bold {style}"), ": ",
                         labelled(merge.source, labels), " -> ", labelled(merge.target, labels))


def elsewhere_text(merge: Merge, labels: Mapping[str, str]) -> Text:
    """A merge of the person caused by an event that is not in its history (a switch that
    took a device to someone else is an event of the new person's history; an unmerge is a
    decision of the workspace, at the position of the undo, with its reason)."""
    if merge.kind == "unmerged":
        return Text.assemble((format_time(merge.timestamp), "bold"), "  ",
                             ("workspace:decisions", "cyan"), "  MergeUndone\n",
                             _merge_line(merge, labels),
                             (f"\nreason: {merge.reason}\n(a merge undone: as if never made)",
                              "dim"))
    return Text.assemble((format_time(merge.timestamp), "bold"), "  ",
                         (printable(merge.device_id or "-"), "cyan"), "\n", _merge_line(merge, labels),
                         ("\n(an event of another person's history)", "dim"))


def history_renderable(
    changes: Iterable[Change], *, person_id: str, labels: Mapping[str, str] | None = None,
    elsewhere: Iterable[Merge] = (), width: int | None = DATA_WIDTH,
) -> RenderableType:
    """A person's Changes, one block each: position, then time, device, event and effects.

    ``person_id``: the person whose history it is (events of persons merged into it later are
    marked); ``labels`` maps person ids and anonymous ids to readable names; ``elsewhere``:
    merges of the person caused by events of other histories, shown at their positions;
    ``width``: where an event's data is cut (None: never, for piped output).
    """
    names = labels or {}
    grid = Table.grid(padding=(0, 2, 0, 0))
    grid.add_column(justify="right", no_wrap=True, style="dim")
    grid.add_column(overflow="fold")
    rows = [(c.position, 0, change_text(c, person_id=person_id, labels=names, width=width))
            for c in changes]
    rows += [(m.position, 1, elsewhere_text(m, names)) for m in elsewhere]
    for position, _, text in sorted(rows, key=lambda row: row[:2]):
        grid.add_row(Text(f"#{position}"), text)
    if not grid.rows:
        grid.add_row(Text(""), Text("(no changes)", style="dim"))
    return grid


def written(change: Change, attribute: str) -> Text:
    """What a Change wrote to ``attribute``: the value, ``(removed)``, or ``... (set_once)``."""
    data = change.data
    parts: list[Text] = []
    if attribute in (data.get("traits") or {}):
        parts.append(_value(data["traits"][attribute]))
    if attribute in (data.get("set") or {}):
        parts.append(_value(data["set"][attribute]))
    if attribute in (data.get("unset") or []):
        parts.append(Text("(removed)", style="dim"))
    if attribute in (data.get("set_once") or {}):
        parts.append(Text.assemble(_value(data["set_once"][attribute]), (" (set_once)", "dim")))
    return Text(", ").join(parts) if parts else Text("-", style="dim")


def _only_set_once(change: Change, attribute: str) -> bool:
    data = change.data
    return (attribute in (data.get("set_once") or {})
            and attribute not in (data.get("set") or {})
            and attribute not in (data.get("unset") or []))


def why_lost(change: Change, winner: Provenance) -> str:
    """Why a write lost to the winner, when the two stamps alone say it; else empty."""
    once = _only_set_once(change, winner.attribute)
    if change.position > winner.position:
        if once:
            return "set_once: the key already had a value"
        if change.timestamp < winner.timestamp:
            return "arrived later with an older client time"
    elif change.timestamp <= winner.timestamp:
        return "replaced by a newer write"
    elif once:
        return "set_once yields to a plain value"
    return ""


def provenance_renderable(
    why: Provenance, *, person_id: str, title: str, set_on: str | None = None,
    lost: int | None = None,
) -> RenderableType:
    """The current value, the event that set it, and a table of the writes that lost to it.

    ``person_id``: the person whose attribute it is; ``title`` names it. ``set_on``: the
    person the winning event applied to, when known. Writes made on a person merged into
    this one later are marked. ``lost``: how many writes lost in all, when ``why.overridden``
    holds one page of them.
    """
    head = Text.assemble((printable(why.attribute), "bold"), " = ", (format_value(why.value), "green"),
                         ("   " + title, "dim"))
    setter = Table.grid(padding=(0, 2))
    setter.add_column(style="dim", no_wrap=True)
    setter.add_column(overflow="fold")
    setter.add_row("set by", Text.assemble((f"#{why.position}", "bold"), "  ",
                                           (why.event, "bold"), " on ",
                                           (printable(why.device_id or "-"), "cyan")))
    setter.add_row("client time", Text(format_time(why.timestamp)))
    setter.add_row("recorded", Text(format_time(why.recorded_at)))
    setter.add_row("message id", Text(printable(why.message_id or "-")))
    if set_on is not None and set_on != person_id:
        setter.add_row("", merged_in(set_on))
    count = len(why.overridden) if lost is None else lost
    table = Table(title=f"writes that lost to it ({count})", title_justify="left",
                 box=box.SIMPLE_HEAD, show_edge=False)
    table.add_column("pos", justify="right")
    # Two facts a cell (the recorded time under the client's, the event under the device), so
    # the table fits 80 columns with room left for the values and the reasons.
    table.add_column("client time / recorded", no_wrap=True)
    table.add_column("device / event", overflow="fold")
    table.add_column("wrote", overflow="fold", min_width=8)
    table.add_column("why it lost", overflow="fold", min_width=16)
    for change in why.overridden:
        note = Text(why_lost(change, why))
        if change.person_id != person_id:
            note = Text("; ").join([note, merged_in(change.person_id)]) if note else merged_in(
                change.person_id)
        times = Text.assemble(format_time(change.timestamp), "\n",
                              (format_time(change.recorded_at), "dim"))
        did = Text.assemble((printable(change.device_id or "-"), "cyan"), "\n", change.event)
        table.add_row(Text(str(change.position)), times, did, written(change, why.attribute),
                      note)
    if not count:
        return Group(head, setter, Text(""),
                     Text("no other write of this key lost to it", style="dim"))
    return Group(head, setter, Text(""), table)


__all__ = [
    "change_text",
    "data_summary",
    "elsewhere_text",
    "history_renderable",
    "merged_in",
    "provenance_renderable",
    "why_lost",
    "written",
]
