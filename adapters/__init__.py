"""The edge: the device log on eventsourcing's recorders, the msgspec codec, the projection
stores (memory, SQLite, PostgreSQL) and the Segment message format.

Each store module offers ``connect(...) -> Stores``; which one a URL picks is decided in one
place, the composition root (:mod:`idstitch.bootstrap`).
"""
