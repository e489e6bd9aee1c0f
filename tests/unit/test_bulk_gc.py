"""What a bulk job (ingest, rebuild) leaves alive is handed to the collector's oldest
generation when the job ends, not left in the youngest one for the next collection to traverse
whole (a rebuilt projection's cached rows: hundreds of thousands of containers)."""

from __future__ import annotations

import gc

from idstitch.service.gc_pause import bulk_gc


def test_what_a_bulk_job_keeps_is_in_the_oldest_generation_after_it() -> None:
    was_enabled = gc.isenabled()
    gc.enable()
    try:
        with bulk_gc():
            assert not gc.isenabled()
            kept = [{"row": [i]} for i in range(2_000)]
        assert gc.isenabled()
        oldest = {id(o) for o in gc.get_objects(generation=2)}
        assert all(id(row) in oldest for row in kept)
    finally:
        if not was_enabled:
            gc.disable()


def test_a_disabled_collector_stays_disabled() -> None:
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        with bulk_gc():
            kept = [{"row": [i]} for i in range(10)]
        assert not gc.isenabled()
        assert kept
    finally:
        if was_enabled:
            gc.enable()


def test_a_pause_on_every_query_leaves_the_application_s_young_objects_young() -> None:
    """The custom projections' catch-up (before every query) and an audit pause the collector
    only: promoting everything young at each call would make the embedding application's
    cyclic garbage wait for full collections."""
    was_enabled = gc.isenabled()
    gc.enable()
    try:
        gc.collect()
        young = [{"app": [i]} for i in range(200)]
        with bulk_gc(promote=False):
            assert not gc.isenabled()
        assert gc.isenabled()
        oldest = {id(o) for o in gc.get_objects(generation=2)}
        assert not any(id(obj) in oldest for obj in young)
    finally:
        if not was_enabled:
            gc.disable()
