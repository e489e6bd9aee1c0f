"""Helpers of the integration tests where one process records a person-level decision (a
forget, an unmerge) and another keeps custom projections: where the decision stands, and a
step of the deciding process held until the test releases it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from idstitch.domain.events import DECISIONS_STREAM, DeviceEvent

from idstitch.workspace import Workspace


def decided(ws: Workspace, kind: type[DeviceEvent]) -> int:
    """The position of the (one) decision of this kind in the log."""
    [(pos, _)] = ws.log.read_spans([(DECISIONS_STREAM, 1, None)], frozenset({kind}))
    return pos


class Held:
    """The deciding process stopped right before a step that follows its decision (the purge,
    the rebuild, the replay), until released; what each run of the step returned."""

    def __init__(self) -> None:
        self.reached, self.release = threading.Event(), threading.Event()
        self.results: list[Any] = []

    def wrap(self, step: Callable[..., Any]) -> Callable[..., Any]:
        def held(*args: Any, **kwargs: Any) -> Any:
            self.reached.set()
            assert self.release.wait(timeout=60), "never released"
            done = step(*args, **kwargs)
            self.results.append(done)
            return done
        return held
