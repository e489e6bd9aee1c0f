"""Renderings of what a person is now: profiles, devices, attributes, merges."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.padding import Padding
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from idstitch.projections.views import Device, Merge, Profile
from idstitch.render.jsonstyle import printable, to_json

KIND_STYLES = {
    "converted": "green",
    "merged": "magenta",
    "switched": "yellow",
    "explicit": "cyan",
    "unmerged": "red",
}


def format_time(value: datetime | None) -> str:
    """A UTC time to the second, ``2026-01-01 09:00:05Z``; ``-`` for none."""
    if value is None:
        return "-"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def format_value(value: Any) -> str:
    """An attribute value as JSON (:func:`~idstitch.render.to_json`), except that a non-empty
    string is shown bare."""
    if isinstance(value, str) and value:
        return printable(value)
    return to_json(value)


def person_label(profile: Profile) -> str:
    """The name a person is best known by: its id, else its email, else ``anonymous <id8>``."""
    for key in ("id", "email"):
        if key in profile.identifiers:
            return printable(profile.identifiers[key])
    return f"anonymous {profile.person_id[:8]}"


def _key_values(values: Mapping[str, Any]) -> Text:
    # Text (not markup strings) because attribute values are user data and may contain "[".
    text = Text()
    for i, (key, value) in enumerate(sorted(values.items())):
        if i:
            text.append("\n")
        text.append(printable(key), style="bold")
        text.append(" = ")
        text.append(format_value(value))
    return text or Text("-", style="dim")


def attributes_renderable(
    attributes: Mapping[str, Any], title: str = "attributes"
) -> RenderableType:
    """A titled list of attributes, ``key  value``, sorted by key."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    for key, value in sorted(attributes.items()):
        grid.add_row(Text(printable(key)), Text(format_value(value)))
    if not attributes:
        grid.add_row(Text("(none)", style="dim"), Text(""))
    return Group(Text(title, style="italic"), Padding(grid, (0, 0, 0, 2)))


def device_renderable(device: Device) -> RenderableType:
    """One device as a block: token, platform, last_used, last_status, flattened attributes.

    A block per device rather than one wide table, so a device with many attributes stays
    readable on an 80-column terminal.
    """
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="dim", no_wrap=True)
    grid.add_column(overflow="fold")
    grid.add_row("token", Text(printable(device.token or "-")))
    grid.add_row("last used", Text(format_time(device.last_used)))
    grid.add_row("last status", Text(printable(device.last_status or "-")))
    grid.add_row("anonymous id", Text(device.anonymous_id))
    grid.add_row("attributes", _key_values(device.flat))
    heading = Text.assemble((printable(device.device_id), "bold cyan"),
                            (f"  ({device.platform})" if device.platform else "", "cyan"))
    return Group(heading, Padding(grid, (0, 0, 0, 2)))


def device_panel(device: Device, *, person: str | None = None) -> RenderableType:
    """One device on its own (``idstitch device``): token, platform, its person, anonymous id,
    custom and collected attributes (as sent, nested kept), last used, last push status.

    ``person``: a readable name of the device's person, when the caller has one."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    grid.add_row("device_id", Text(printable(device.device_id)))
    grid.add_row("token", Text(printable(device.token or "-")))
    grid.add_row("platform", Text(printable(device.platform or "-")))
    who = Text(device.person_id)
    if person is not None and person != device.person_id:
        who = Text.assemble(person, " ", (f"(person {device.person_id})", "dim"))
    grid.add_row("person", who)
    grid.add_row("anonymous id", Text(device.anonymous_id))
    grid.add_row("attributes", _key_values(device.attributes))
    grid.add_row("collected", _key_values(device.collected))
    grid.add_row("last used", Text(format_time(device.last_used)))
    grid.add_row("last status", Text(printable(device.last_status or "-")))
    grid.add_row("created / updated",
                 Text(f"{format_time(device.created_at)} / {format_time(device.updated_at)}"))
    return Panel(grid, title=Text(printable(device.device_id), style="bold cyan"),
                 title_align="left", border_style="cyan", expand=False)


def devices_renderable(devices: Iterable[Device], title: str = "devices") -> RenderableType:
    """The devices of a person, one block each."""
    blocks = [Padding(device_renderable(d), (0, 0, 0, 2)) for d in devices]
    if not blocks:
        blocks.append(Padding(Text("(none)", style="dim"), (0, 0, 0, 2)))
    return Group(Text(title, style="italic"), *blocks)


def profile_renderable(profile: Profile, *, title: str | None = None) -> RenderableType:
    """A panel with the person's identity, attributes and devices."""
    summary = Table.grid(padding=(0, 2))
    summary.add_column(style="bold")
    summary.add_column(overflow="fold")
    summary.add_row("person_id", Text(profile.person_id))
    summary.add_row(
        "identified",
        Text("yes", style="green") if profile.identified else Text("no (anonymous)", style="dim"),
    )
    summary.add_row("identifiers", _key_values(profile.identifiers))
    summary.add_row(
        "anonymous ids",
        Text("\n".join(profile.anonymous_ids)) if profile.anonymous_ids
        else Text("-", style="dim"),
    )
    summary.add_row(
        "created / updated",
        Text(f"{format_time(profile.created_at)} / {format_time(profile.updated_at)}"),
    )
    body = Group(
        summary,
        Text(""),
        attributes_renderable(profile.attributes),
        Text(""),
        devices_renderable(profile.devices),
    )
    heading = title if title is not None else person_label(profile)
    style = "green" if profile.identified else "bright_black"
    return Panel(body, title=Text(printable(heading), style="bold"), title_align="left",
                 border_style=style)


def labelled(value: str, names: Mapping[str, str]) -> Text:
    """A person id or anonymous id as its readable name and first 8 characters (enough to
    find it in the profile, as with short git hashes), or in full when it has no name."""
    if value in names:
        return Text.assemble(printable(names[value]), " ", (value[:8], "dim"))
    return Text(value)


def merges_blocks(merges: Iterable[Merge], *, title: str = "merges",
                  labels: Mapping[str, str] | None = None) -> RenderableType:
    """The merges of :func:`merges_table`, one block each, for a terminal too narrow for its
    columns: every word and the merge id kept whole (a table squeezed that far drops them)."""
    names = labels or {}
    blocks: list[RenderableType] = [Text(title, style="italic")]
    for merge in merges:
        block = Text.assemble((f"#{merge.position}  ", "dim"),
                              (merge.kind, f"bold {KIND_STYLES.get(merge.kind, '')}"), "  ",
                              labelled(merge.source, names), " -> ",
                              labelled(merge.target, names))
        block.append(f"\n    {printable(merge.device_id or '-')} · "
                     f"{format_time(merge.timestamp)}", style="dim")
        if merge.reason:
            block.append(f"\n    {printable(merge.reason)}")
        if merge.kind in UNDOABLE:
            block.append(f"\n    merge id {merge.merge_id}", style="dim")
        blocks.append(block)
    if len(blocks) == 1:
        blocks.append(Text("(no merges)", style="dim"))
    return Group(*blocks)


UNDOABLE = frozenset({"merged", "explicit"})
"""The kinds of merge record ``unmerge`` undoes (its id shown in full)."""


def merges_table(
    merges: Iterable[Merge],
    *,
    title: str = "merges",
    labels: Mapping[str, str] | None = None,
) -> Table:
    """One row per conversion, merge or switch, in log order.

    ``labels`` maps a person id or anonymous id to a readable name; a labelled id is shown as
    the name and the id's first 8 characters (enough to find it in the profile, as with short
    git hashes), an unlabelled one in full.
    """
    names = labels or {}
    rows = list(merges)
    # Only explicit merges and unmerges carry a reason: no empty column for SDK-driven ones.
    with_reason = any(m.reason for m in rows)
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False)
    table.add_column("pos", justify="right")
    table.add_column("kind", no_wrap=True)
    # Names first: on a narrow terminal the device and time wrap (at spaces) before they do.
    table.add_column("source", overflow="fold", min_width=12)
    table.add_column("target", overflow="fold", min_width=12)
    table.add_column("device", style="cyan", overflow="fold", min_width=8)
    table.add_column("time", min_width=10)
    if with_reason:
        table.add_column("reason")
    # What `idstitch unmerge` takes: in full, for the merges it can undo.
    table.add_column("merge id", style="dim", overflow="fold", min_width=8)
    for merge in rows:
        cells = [
            Text(str(merge.position)),
            Text(merge.kind, style=KIND_STYLES.get(merge.kind, "")),
            labelled(merge.source, names),
            labelled(merge.target, names),
            Text(printable(merge.device_id or "-")),
            Text(format_time(merge.timestamp)),
        ]
        if with_reason:
            cells.append(Text(printable(merge.reason or "-")))
        cells.append(Text(merge.merge_id if merge.kind in UNDOABLE else "-"))
        table.add_row(*cells)
    if not rows:
        table.add_row(Text(""), Text("(no merges)", style="dim"), *[Text("")] * 5)
    return table


__all__ = [
    "attributes_renderable",
    "device_panel",
    "device_renderable",
    "devices_renderable",
    "format_time",
    "format_value",
    "labelled",
    "merges_blocks",
    "merges_table",
    "person_label",
    "profile_renderable",
]
