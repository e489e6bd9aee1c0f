"""What a runner keeps about each projection it runs, between its transactions: the cache of
decoded rows and where it stands (a projection's definition keeps none of it). Re-exported by
:mod:`idstitch.projections.runner`."""

from __future__ import annotations

from idstitch.projections.base import RowProjection
from idstitch.projections.unit import Cache, new_cache


class RunnerState:
    """What a runner keeps about one projection between its transactions (the definition,
    :class:`~idstitch.projections.base.RowProjection`, keeps none of it)."""

    def __init__(self, projection: RowProjection) -> None:
        self.row_types = projection.row_types
        self.batch_size = 50_000
        """Events per catch-up transaction at most (a smaller one holds the write lock less)."""
        self.cache: Cache = new_cache(self.row_types)
        self.cached_at: tuple[int, str | None] = (-1, None)
        """The committed (position, meta) the cache reflects; another one starts it cold."""
        self.complete = False
        """Whether the cache holds every row that exists (after a reset, until an eviction)."""
        self.verified: tuple[int, str | None, int] | None = None
        """(committed position, meta, position): this process folded up to that position
        over the committed one, and the events in between changed none of the projection's
        rows (nothing of its own, or nothing that changed a row), so it left them uncommitted
        (see runner.LAG_LIMIT). While the committed (position, meta) is the same, the next
        catch-up starts after them instead of reading them again."""
        self.committed = 0
        """The committed position the last catch-up left (the position it returns may lie up
        to LAG_LIMIT further, over other projections' events): a snapshot of the rows whose
        position is behind it was taken after a reset (a rebuild elsewhere)."""

    def forget(self) -> None:
        """Drop cached rows (after a reset of the store, or any failure mid-fold)."""
        self.cache, self.cached_at, self.complete = new_cache(self.row_types), (-1, None), False
        self.verified = None


def folded_to(state: RunnerState, tracked: tuple[int, str | None], *, eager: bool = False
              ) -> int:
    """How far rows committed at ``tracked`` (position, meta) hold the log, as this process
    knows: past the position, up to where it folded with no row changed (``verified``;
    ``eager``: a projecting process, which must commit every position it reaches)."""
    verified = state.verified
    if not eager and verified is not None and verified[:2] == tracked:
        return verified[2]
    return tracked[0]


def holds_head(state: RunnerState, head: int, tracked: tuple[int, str | None]) -> bool:
    """Whether a projection's rows committed at ``tracked`` (position, meta) hold the log up to
    ``head``, as the runner knows them: rows of the life (policy, format, epoch) this process
    last committed or read, no reset since (which moves the committed position back), and
    committed up to the head, or folded since by this process with no row changed
    (``verified``). Then a catch-up would fold and write nothing a reader needs; any doubt
    is a catch-up's to settle (a rebuild elsewhere under another policy: PolicyMismatch)."""
    return (tracked[1] == state.cached_at[1] and tracked[0] >= state.committed
            and folded_to(state, tracked) >= head)


class RunnerStates:
    """The runner's state of each projection it runs, made on first use."""

    def __init__(self) -> None:
        self._states: dict[str, RunnerState] = {}

    def of(self, projection: RowProjection) -> RunnerState:
        """The state of one projection."""
        state = self._states.get(projection.name)
        if state is None:
            state = self._states[projection.name] = RunnerState(projection)
        return state

    def forget(self, name: str) -> None:
        """Drop one projection's cached rows (nothing when it has none)."""
        state = self._states.get(name)
        if state is not None:
            state.forget()
