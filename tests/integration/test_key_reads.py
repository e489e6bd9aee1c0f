"""Reloading a batch of devices reads their data subjects' keys in one call (issue 17: a writer
that reloads devices another writer moved meets many subjects at once, and one key store read
per event past the key cache was a quarter of its time on PostgreSQL). A real SQLite file."""

from __future__ import annotations

from pathlib import Path

import msgspec

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


def test_a_page_unseals_as_each_event_alone(tmp_path: Path) -> None:
    """A page of events is unsealed in one loop (the replay's path) and one event on its own
    by another: on a page that mixes plain events, live keys, a destroyed key and a value
    sealed under another subject's key (it fails authentication), both read the same, and
    the two unreadable ones read erased."""
    url = f"sqlite:///{tmp_path / 'ws.db'}"
    with idstitch.open(url) as ws:
        ws.set_device_attributes("d0", {"screen": "wide"})
        for i in range(3):
            ws.identify(f"d{i}", f"u{i}", {"n": i, "email": f"u{i}@example.com"})
        stores = ws._services.stores
        cipher = stores.cipher
        assert cipher is not None
        codec = stores.log.codec
        conn = stores.rows._conn  # type: ignore[attr-defined]
        states = [s for (s,) in conn.execute("SELECT state FROM idstitch_events ORDER BY position")]
        sealed = [codec._decoder.decode(s) for s in states]
        u0, u1 = (e for e in sealed if e.sealed is not None and e.device_id in ("d0", "d1")
                  and type(e).__name__ == "Identified")
        # u0's values, labelled as sealed under u1's key: authentication fails.
        states.append(msgspec.msgpack.encode(msgspec.structs.replace(u0, key_id=u1.key_id)))
        cipher.keys.destroy([u1.key_id])
        cipher.forget([u1.key_id])
        page = codec.decode_all(states)
        assert page == [codec.decode(s) for s in states]
        erased = [e for e in page if getattr(e, "erased", False)]
        assert len(erased) == 2
        assert all(e.user_id == "" for e in erased)
        assert page[-1].device_id == "d0" and page[-1].sealed is None
        assert any(getattr(e, "user_id", None) == "u2" for e in page)
