"""What a custom projection's SQL may not do, on every store: reach past its tables through a
trigger, run several statements or the runner's own (a COMMIT would split its rows from its
tracking; on PostgreSQL a read-only reader's COMMIT then a write once wrote), take another's
name; and what it gets for SQL or values the database refuses: a typed error, never the
driver's. The log stays whole through all of it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import pytest

import idstitch
from idstitch import Change, Projection, ProjectionDB
from idstitch.errors import InvalidCommand, ProjectionFailed
from idstitch.testing import TemporaryPostgres
from idstitch.workspace import Workspace

WorkspaceFactory = Callable[..., Workspace]


class Counter(Projection):
    """Counts Changes."""

    name = "counter"
    version = 1

    def setup(self, db: ProjectionDB) -> None:
        db.execute("CREATE TABLE n (k TEXT PRIMARY KEY, c INTEGER)")

    def handle(self, db: ProjectionDB, change: Change) -> None:
        db.execute("INSERT INTO n VALUES ('all', 1) ON CONFLICT (k) DO UPDATE SET c = n.c + 1")


class OtherCounter(Counter):
    """Another class under the same name and version."""

    def setup(self, db: ProjectionDB) -> None:
        db.execute("CREATE TABLE other (k TEXT)")


class Sneaky(Projection):
    """A trigger on its own table whose body reaches the log (SQLite)."""

    name = "sneaky"
    version = 1

    def setup(self, db: ProjectionDB) -> None:
        db.execute("CREATE TABLE t (x INTEGER)")
        db.execute("CREATE TABLE loot (n INTEGER)")
        db.execute("CREATE TRIGGER grab AFTER INSERT ON t BEGIN "
                   "INSERT INTO loot SELECT count(*) FROM idstitch_events; "
                   "DELETE FROM idstitch_events; END")

    def handle(self, db: ProjectionDB, change: Change) -> None:
        db.execute("INSERT INTO t VALUES (?)", (change.position,))


def test_a_trigger_reaches_no_further_than_its_projection(tmp_path: Path) -> None:
    ws = idstitch.open(f"sqlite:///{tmp_path}/ws.db")
    try:
        ws.identify("phone", "kim", {})
        head = ws.log.head()
        with pytest.raises(ProjectionFailed) as failed:
            ws.run_projection(Sneaky())
        assert isinstance(failed.value.cause, InvalidCommand)
        assert "reaches only its own tables" in str(failed.value.cause)
        assert ws.log.head() == head and ws.verify().ok
    finally:
        ws.close()


@pytest.mark.parametrize("sql", [
    "SELECT 1; DELETE FROM n",
    "SELECT 1; COMMIT; INSERT INTO n VALUES ('x', 1)",
    "COMMIT",
    "ROLLBACK",
    "SET search_path TO public",
    "CREATE TRIGGER grab AFTER INSERT ON n BEGIN SELECT 1; END; DELETE FROM n",
])
def test_several_statements_and_the_runners_own_are_refused(
        make_ws: WorkspaceFactory, sql: str) -> None:
    ws = make_ws()
    ws.identify("phone", "kim", {})
    ws.run_projection(Counter())
    db = ws.projection_db("counter")
    before = db.query("SELECT k, c FROM n")
    with pytest.raises(InvalidCommand) as e:
        db.query(sql)
    assert e.value.field == "sql"
    assert db.query("SELECT k, c FROM n") == before and ws.verify().ok


@pytest.mark.parametrize(("sql", "params", "field"), [
    ("SELEC 1", (), "sql"),
    ("SELECT ? + ?", (1,), "params"),
    ("SELECT ?", (object(),), "params"),
    ("SELECT ?", ("\ud800",), "params"),
    ("SELECT ?", ({"a": 1},), "params"),
    ("SELECT ?, ?", ("a", "b", "c"), "params"),
    ("SELECT 1; SELECT 2", (), "sql"),
])
def test_what_the_database_refuses_is_a_typed_error(
        make_ws: WorkspaceFactory, sql: str, params: tuple[object, ...], field: str) -> None:
    ws = make_ws()
    ws.run_projection(Counter())
    with pytest.raises(InvalidCommand) as e:
        ws.projection_db("counter").query(sql, params)
    # Values the driver refuses before the database sees the statement are the values'.
    assert e.value.field == field, e.value


class Refused(Projection):
    """Runs an insert with an integer SQLite cannot store, another refused insert, then the
    first again, in its setup; keeps the three errors."""

    name = "refused"
    errors: ClassVar[list[InvalidCommand]] = []

    def setup(self, db: ProjectionDB) -> None:
        db.execute("CREATE TABLE nn (x INTEGER)")
        for sql, params in [("INSERT INTO nn VALUES (?)", (2**70,)),
                            ("INSERT INTO nn VALUES (?, ?)", (1, 2)),
                            ("INSERT INTO nn VALUES (?)", (2**70,))]:
            try:
                db.execute(sql, params)
            except InvalidCommand as e:
                self.errors.append(e)

    def handle(self, db: ProjectionDB, change: Change) -> None:
        pass


@pytest.mark.parametrize("where", ["memory", "file"])
def test_a_value_refused_after_another_refusal_is_named_as_itself(
        tmp_path: Path, where: str) -> None:
    """SQLite's driver reported an integer it cannot store, in a statement it had cached,
    with the previous refused statement's error text: the caller was told about SQL that was
    not theirs. (PostgreSQL stores such an integer as a numeric.)"""
    Refused.errors.clear()
    url = "memory:" if where == "memory" else f"sqlite:///{tmp_path}/ws.db"
    with idstitch.open(url, projections=[Refused()]):
        pass
    once, other, again = Refused.errors
    assert (once.field, other.field) == ("params", "sql")
    assert again.field == "params" and str(again) == str(once)


def test_a_name_is_unique_in_the_workspace(make_ws: WorkspaceFactory) -> None:
    ws = make_ws()
    ws.run_projection(Counter())
    with pytest.raises(InvalidCommand):
        ws.run_projection(OtherCounter())
    ws.identify("phone", "kim", {})
    assert ws.projection_db("counter").query("SELECT c FROM n") == [(1,)]
    with pytest.raises(InvalidCommand) as e:
        idstitch.open("memory:", projections=[Counter(), OtherCounter()])
    assert e.value.field == "projections"


def test_a_version_beyond_the_tracking_is_refused(make_ws: WorkspaceFactory) -> None:
    class Huge(Counter):
        version = 2**63

    ws = make_ws()
    with pytest.raises(InvalidCommand) as e:
        ws.run_projection(Huge())
    assert e.value.field == "version"


class Tokens(Projection):
    """Wants token registrations only: most positions are not its events."""

    name = "tokens"
    version = 1
    events = frozenset({"DeviceTokenRegistered"})

    def setup(self, db: ProjectionDB) -> None:
        db.execute("CREATE TABLE t (device_id TEXT, token TEXT)")

    def handle(self, db: ProjectionDB, change: Change) -> None:
        db.execute("INSERT INTO t VALUES (?, ?)", (change.device_id, change.data["token"]))


def test_catch_up_leaves_no_lag(make_ws: WorkspaceFactory) -> None:
    """ws.catch_up() brings every projection to the head: the device attributes and a custom
    projection that met none of their events since say so too (lag 0), not only the reads."""
    ws = make_ws(projections=[Tokens()])
    ws.register_device_token("phone", "apns-1", platform="ios")
    for i in range(20):
        ws.set_profile_attributes("phone", {"n": i})
    assert ws.catch_up() == ws.log.head()
    assert ws.lag() == 0
    assert {s.name: s.lag for s in ws.projection_status()} == {
        "identity": 0, "device_attributes": 0, "tokens": 0}


class Daily(Projection):
    """A projection whose name begins with another's name and a version: ``stats_v1_...``."""

    name = "stats_v1_daily"
    events = frozenset({"Identified"})

    def setup(self, db: ProjectionDB) -> None:
        db.execute("CREATE TABLE seen (device_id TEXT PRIMARY KEY)")

    def handle(self, db: ProjectionDB, change: Change) -> None:
        db.execute("INSERT INTO seen VALUES (?) ON CONFLICT (device_id) DO NOTHING",
                   (change.device_id,))


class Stats(Projection):
    """Version 1 of ``stats``: its SQLite tables' prefix, ``p_stats_v1_``, begins every table
    name of ``stats_v1_daily`` too."""

    name = "stats"
    events = frozenset({"Identified"})

    def setup(self, db: ProjectionDB) -> None:
        db.execute("CREATE TABLE n (k TEXT PRIMARY KEY)")

    def handle(self, db: ProjectionDB, change: Change) -> None:
        pass


def test_a_projection_never_takes_tables_of_one_whose_name_begins_with_its_own(
        make_ws: WorkspaceFactory) -> None:
    """Registering 'stats' dropped the tables of 'stats_v1_daily' (its prefix begins theirs),
    whose next fold then failed; and 'stats' could reach them by their full name."""
    ws = make_ws(projections=[Daily()])
    ws.identify("phone", "kim")
    ws.run_projection(Stats)
    ws.identify("laptop", "sam")
    assert sorted(ws.projection_db("stats_v1_daily").query("SELECT device_id FROM seen")) == [
        ("laptop",), ("phone",)]
    with pytest.raises(InvalidCommand):
        ws.projection_db("stats").query('SELECT * FROM "p_stats_v1_daily_v1_seen"')
    ws.rebuild(["stats"])
    assert len(ws.projection_db("stats_v1_daily").query("SELECT device_id FROM seen")) == 2


class Victim(Projection):
    """Writes and reads its table once a Change."""

    name = "victim"

    def setup(self, db: ProjectionDB) -> None:
        db.execute("CREATE TABLE secrets (k TEXT PRIMARY KEY, v TEXT)")

    def handle(self, db: ProjectionDB, change: Change) -> None:
        db.execute("INSERT INTO secrets VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET v = "
                   "excluded.v", (change.device_id, change.person_id))
        db.query("SELECT * FROM secrets")


class Prying(Projection):
    """Sends the exact texts the victim's statements have once rewritten into its namespace."""

    name = "prying"
    outcomes: ClassVar[list[str]] = []

    def setup(self, db: ProjectionDB) -> None:
        db.execute("CREATE TABLE mine (x INTEGER)")

    def handle(self, db: ProjectionDB, change: Change) -> None:
        for run in (lambda: db.query('SELECT * FROM "p_victim_v1_secrets"'),
                    lambda: db.execute('INSERT INTO "p_victim_v1_secrets" VALUES (?, ?) ON '
                                       'CONFLICT (k) DO UPDATE SET v = excluded.v',
                                       ("forged", "by another projection"))):
            try:
                run()
                self.outcomes.append("ran")
            except InvalidCommand:
                self.outcomes.append("refused")


@pytest.mark.parametrize("where", ["memory", "file"])
def test_a_statement_another_projection_prepared_is_judged_again(
        tmp_path: Path, where: str) -> None:
    """SQLite judges a statement when it is prepared, and sqlite3 handed the prepared statement
    of one projection to another that sent the same text: read and written past the
    authorizer."""
    Prying.outcomes.clear()
    url = "memory:" if where == "memory" else f"sqlite:///{tmp_path}/ws.db"
    with idstitch.open(url, projections=[Victim(), Prying()]) as ws:
        ws.identify("d1", "alice")
        ws.identify("d2", "bob")  # the victim's texts are prepared by now
        assert Prying.outcomes and set(Prying.outcomes) == {"refused"}
        assert "forged" not in {k for k, _ in ws.projection_db("victim").query(
            "SELECT * FROM secrets")}


@pytest.mark.parametrize(("sql", "found"), [
    ("SELECT count(*) FROM n WHERE k LIKE 'a%'", [(1,)]),
    ("SELECT count(*) FROM n WHERE k <> '%s'", [(1,)]),
    ("SELECT k FROM n WHERE k = ? AND 'n?' = 'n?'", [("all",)]),
])
def test_a_percent_or_question_mark_in_a_string_is_the_strings(
        make_ws: WorkspaceFactory, sql: str, found: list[tuple[object, ...]]) -> None:
    """On PostgreSQL a '%' in a literal was taken for a placeholder by the driver, and a '?'
    or a table's name in one was rewritten."""
    ws = make_ws()
    ws.run_projection(Counter())
    ws.identify("phone", "kim")
    params = ("all",) if "?" in sql.split("'")[0] else ()
    assert ws.projection_db("counter").query(sql, params) == found


def test_dollar_quoted_strings_stay_as_written_on_postgresql(postgres: TemporaryPostgres) -> None:
    with idstitch.open(postgres.url("idstitch_tests") + "?schema=dollar_quotes") as ws:
        ws.run_projection(Counter())
        db = ws.projection_db("counter")
        assert db.query("SELECT $$what? 100%$$, $t$ n $t$") == [("what? 100%", " n ")]
        assert db.query("SELECT 'a%b', E'it''s 5%', 7 % 4") == [("a%b", "it's 5%", 3)]
        # A backslash-escaped quote ends no E'' string: the '?' and 'n' in it stay as written.
        assert db.query("SELECT E'it\\'s n?', k FROM n WHERE k = ?", ("none",)) == []
        assert db.query("SELECT E'it\\'s n?' AS \"100%\"") == [("it's n?",)]


class LongNamed(Counter):
    """Counts, under a name given at construction."""

    def __init__(self, name: str) -> None:
        self.name = name


def test_two_names_that_would_share_a_postgresql_schema_are_refused(
        postgres: TemporaryPostgres) -> None:
    """A projection's schema is <store schema>_p_<name>, cut at 63 characters: the second of
    two long names once wrote into the first one's tables."""
    home = "tenant_" + "x" * 33
    with idstitch.open(postgres.url("idstitch_tests") + f"?schema={home}") as ws:
        ws.run_projection(LongNamed("devices_per_platform_daily"))
        with pytest.raises(InvalidCommand, match="would share the schema") as refused:
            ws.run_projection(LongNamed("devices_per_platform_weekly"))
        assert refused.value.field == "name"
        ws.identify("phone", "kim")
        assert ws.projection_db("devices_per_platform_daily").query("SELECT c FROM n") == [(1,)]


def test_a_store_schema_too_long_for_projection_schemas_is_said(
        postgres: TemporaryPostgres) -> None:
    """With a 60-63 character store schema, a projection's cut schema was the store's own
    (it read idstitch_rows), or every projection was refused with a negative room."""
    home = "s" * 62
    with idstitch.open(postgres.url("idstitch_tests") + f"?schema={home}") as ws:
        with pytest.raises(InvalidCommand, match="at most 59 characters") as refused:
            ws.run_projection(Counter())
        assert refused.value.field == "name"
