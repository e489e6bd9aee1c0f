"""Reloading a batch of devices reads their data subjects' keys in one call (issue 17: a writer
that reloads devices another writer moved meets many subjects at once, and one key store read
per event past the key cache was a quarter of its time on PostgreSQL). A real SQLite file."""

from __future__ import annotations

from pathlib import Path

import idstitch


def test_reloading_devices_reads_their_keys_in_one_call(tmp_path: Path) -> None:
    # A writer that reloads devices another writer moved meets many data subjects at once:
    # one key store read per event (past the cache) was a quarter of its time on PostgreSQL.
    url = f"sqlite:///{tmp_path / 'ws.db'}"
    with idstitch.open(url) as ws:
        for i in range(40):
            ws.identify(f"d{i}", f"u{i}", {"n": i})
    with idstitch.open(url) as ws:
        cipher = ws._services.stores.cipher
        assert cipher is not None
        calls: list[str] = []
        keys = cipher.keys
        get, get_many = keys.get, keys.get_many  # type: ignore[attr-defined]
        keys.get = lambda key_id: calls.append("get") or get(key_id)  # type: ignore[method-assign]
        keys.get_many = (  # type: ignore[attr-defined]
            lambda key_ids: calls.append("get_many") or get_many(key_ids))
        devices = ws.log.load_many([f"d{i}" for i in range(40)])
        assert all(devices[f"d{i}"].user_id == f"u{i}" for i in range(40))
        assert calls == ["get_many"]
