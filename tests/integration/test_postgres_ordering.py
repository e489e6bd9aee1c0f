"""The batch append path keeps the recorder's ordering guarantee on PostgreSQL.

Positions come from a sequence, so concurrent transactions can commit out of order. The append
path takes the events table's EXCLUSIVE lock, as eventsourcing's recorder does, so a position
becomes visible only after every smaller one: a reader tailing the log never skips a gap that a
slower writer fills later.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from idstitch.domain.commands import SetDeviceAttributes
from idstitch.domain.device import Device

from idstitch.bootstrap import open_stores
from idstitch.testing import TemporaryPostgres

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_a_tailing_reader_never_skips_a_position(postgres: TemporaryPostgres) -> None:
    url = postgres.url("idstitch_tests") + "?schema=ordering"
    writers = [open_stores(url) for _ in range(4)]
    reader = open_stores(url)
    done = threading.Event()
    seen: list[int] = []
    errors: list[BaseException] = []

    def write(n: int) -> None:
        try:
            for i in range(40):
                devices = []
                for k in range(5):
                    device = Device(f"w{n}-{i}-{k}")
                    device.handle(SetDeviceAttributes(device_id=device.device_id,
                                                      attributes={"i": i}, timestamp=T0), T0)
                    devices.append(device)
                writers[n].log.append([e for d in devices for e in d.collect_events()])
        except BaseException as e:  # asserted below
            errors.append(e)

    def tail() -> None:
        after = 0
        while True:
            finished = done.is_set()
            batch = reader.log.read(after, 50)
            seen.extend(e.position for e in batch)
            if batch:
                after = batch[-1].position
            elif finished:
                return

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    tailer = threading.Thread(target=tail)
    tailer.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    tailer.join()
    everything = [e.position for e in reader.log.read(0, 10_000)]
    for s in (*writers, reader):
        s.close()
    assert errors == []
    assert len(everything) == 4 * 40 * 5
    assert seen == everything  # in order, and nothing skipped
