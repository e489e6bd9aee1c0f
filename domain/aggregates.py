"""The aggregates of a workspace's log: the devices, and the workspace's decisions stream.

Both share one log, one unit of work and one commit: the writer keys each by its stream name
(a device id, or :data:`~idstitch.domain.events.DECISIONS_STREAM`) and hands it checked
commands through ``handle``.
"""

from __future__ import annotations

from idstitch.domain.decisions import Decisions
from idstitch.domain.device import Device
from idstitch.domain.events import DECISIONS_STREAM
from idstitch.domain.ids import AggregateId

Aggregate = Device | Decisions
"""Whatever a stream of the log loads as."""


def new_aggregate(stream: str, aggregate_id: AggregateId | None = None) -> Aggregate:
    """The empty aggregate (version 0) of a stream: the decisions, or a device."""
    if stream == DECISIONS_STREAM:
        return Decisions(aggregate_id)
    return Device(stream, aggregate_id)
