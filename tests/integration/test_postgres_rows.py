"""PostgreSQL projection rows go through binary arrays: any key and any document round-trip.

Text-format arrays need quoting and escaping (braces, commas, quotes, backslashes, NULL, the
empty string); binary arrays need none. These keys would catch a regression to a hand-built
text format.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
from idstitch.adapters.stores import Stores

from idstitch.bootstrap import open_stores
from idstitch.testing import TemporaryPostgres

_n = itertools.count()

AWKWARD = ["", "NULL", "null", "a,b", "{x}", '"q"', "back\\slash", "sp ace", "é✓", "tab\there",
           "new\nline"]


@pytest.fixture
def stores(postgres: TemporaryPostgres) -> Iterator[Stores]:
    s = open_stores(postgres.url("idstitch_tests") + f"?schema=rows{next(_n)}")
    yield s
    s.close()


def test_awkward_keys_and_documents_round_trip(stores: Stores) -> None:
    docs = {key: key.encode() + bytes(range(256)) for key in AWKWARD}
    with stores.rows.transaction("x") as tx:
        tx.write({("k,{", key): doc for key, doc in docs.items()}, 1, None)
    assert stores.rows.get_many("k,{", [*AWKWARD, "absent"]) == docs
    assert dict(stores.rows.scan("k,{")) == docs
    assert all(stores.rows.get("k,{", key) == doc for key, doc in docs.items())  # one key
    with stores.rows.transaction("x") as tx:
        assert tx.get_many("k,{", AWKWARD[:3]) == {key: docs[key] for key in AWKWARD[:3]}
        tx.write({("k,{", key): None for key in AWKWARD[:5]}, 2, None)
    assert stores.rows.get_many("k,{", AWKWARD) == {key: docs[key] for key in AWKWARD[5:]}
    assert stores.rows.get_many("k,{", []) == {}
