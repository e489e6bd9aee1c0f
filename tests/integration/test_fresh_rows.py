"""The rows a catch-up hands the store as new (``fresh``: PostgreSQL inserts them without an
upsert's conflict check) never exist in the committed rows: checked at every commit of the
built-in projections over traffic that creates, switches, merges, clears and moves rows, on the
memory store, whose committed rows a test can see (a wrong hint would cost PostgreSQL a failed
statement and a second one; the contract tests prove the store survives it)."""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from datetime import UTC, datetime, timedelta

import pytest
from idstitch.adapters.memory import MemoryProjectionStore

import idstitch

T0 = datetime(2026, 1, 1, 9, tzinfo=UTC)


def traffic(ws: idstitch.Workspace, rounds: int) -> None:
    for i in range(rounds):
        t = T0 + timedelta(seconds=i)
        device, user = f"d{i % 7}", f"u{i % 5}"
        ws.set_profile_attributes(device, {"visits": i}, timestamp=t)
        ws.identify(device, user, {"email": f"{user}@example.com", "n": i}, timestamp=t)
        ws.register_device_token(device, f"tok{i % 9}", platform="ios", timestamp=t)
        ws.set_device_attributes(device, {"screen": i % 3}, timestamp=t)
        if i % 4 == 3:
            ws.clear_identify(device, timestamp=t)
        if i % 6 == 5:
            ws.identify(f"d{(i + 1) % 7}", user, timestamp=t)  # a second device, a switch


def test_fresh_rows_never_exist_when_written(monkeypatch: pytest.MonkeyPatch) -> None:
    ws = idstitch.open("memory:")
    rows = ws._services.stores.rows
    assert isinstance(rows, MemoryProjectionStore)
    seen: list[int] = []
    write_if = rows.write_if

    def checked(name: str, expected: tuple[int, str | None],
                changed: Mapping[tuple[str, str], bytes | None], position: int,
                meta: str | None, fresh: AbstractSet[tuple[str, str]] = frozenset(),
                ) -> tuple[int, str | None] | None:
        if rows.tracked(name) == expected:  # a write that will land: its fresh rows are new
            existing = [k for k in fresh if rows.get(*k) is not None]
            assert existing == [], f"{name}: rows taken for new exist: {existing[:3]}"
            assert all(changed.get(k) is not None for k in fresh)
        seen.append(len(fresh))
        return write_if(name, expected, changed, position, meta, fresh)

    monkeypatch.setattr(rows, "write_if", checked)
    # The memory store ignores the hint, so the runner does not work it out for it
    # (uses_fresh): here it is asked for, as PostgreSQL asks.
    monkeypatch.setattr(rows, "uses_fresh", True, raising=False)
    traffic(ws, 60)
    ws.ingest([{"type": "identify", "userId": f"bulk{i % 40}", "anonymousId": f"a{i}",
                "traits": {"n": i}, "timestamp": (T0 + timedelta(minutes=i)).isoformat(),
                "context": {"device": {"id": f"bulk-device-{i % 50}"}}} for i in range(300)])
    assert sum(seen) > 100  # persons, devices, identifiers, tokens, merges were new
    incremental = ws.dump()
    ws.rebuild()
    assert ws.dump() == incremental
