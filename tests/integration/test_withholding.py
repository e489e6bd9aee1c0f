"""What a file of refused messages keeps of one naming a forgotten person
(``idstitch.service.withholding``), against a real SQLite store's forgotten identifiers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

import idstitch
from idstitch.service.withholding import forgotten_check, withheld
from idstitch.workspace import Workspace


def cipher_of(ws: Workspace) -> Any:
    return ws._services.stores.cipher


@pytest.fixture
def url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path}/x.db"
    with idstitch.open(url) as ws:
        ws.identify("phone", "kim-55", {"email": "kim@example.com"})
        ws.identify("laptop", "sam", {"email": "sam@example.com"})
    return url


def test_nobody_forgotten_is_no_check(url: str) -> None:
    with idstitch.open(url) as ws:
        assert forgotten_check(cipher_of(ws)) is None
    assert forgotten_check(None) is None


def test_a_forget_by_another_process_counts_at_once(url: str) -> None:
    with idstitch.open(url) as server, idstitch.open(url) as other:
        assert forgotten_check(cipher_of(server)) is None  # read now: nobody yet
        other.forget("kim-55", reason="ticket 313")
        # Within the second a workspace trusts its copy of the suppressed identifiers.
        forgotten = forgotten_check(cipher_of(server))
        assert forgotten is not None and forgotten("kim-55") and not forgotten("sam")


@pytest.mark.parametrize(("message", "kept"), [
    ({"type": "identify", "userId": "kim-55", "messageId": "m-1", "traits": {"city": "Lyon"}},
     {"type": "identify", "messageId": "m-1"}),
    # Anywhere in it, as a value or a key, an email in any case and spacing.
    ({"type": "track", "properties": {"list": [{"to": " KIM@Example.com"}]}},
     {"type": "track"}),
    ({"type": "track", "messageId": 7, "properties": {"kim-55": True}}, {"type": "track"}),
    # A messageId that is itself an identifier of the person is not kept either.
    ({"type": "identify", "messageId": "kim@example.com"}, {"type": "identify"}),
    ("kim-55", {}),
    (msgspec.Raw(b'{"type": "alias", "previousId": "kim-55", "messageId": "m-2"}'),
     {"type": "alias", "messageId": "m-2"}),
    (b"not JSON, kim-55", {}),  # cannot be told: nothing of it
    ({"type": "identify", "userId": "sam", "traits": {"city": "Oslo"}}, None),
    ({"type": "identify", "userId": "kim-5", "traits": {"note": "kim-55 said hi"}}, None),
])
def test_what_is_kept_of_a_refused_message(url: str, message: Any, kept: dict[str, str] | None) -> None:
    with idstitch.open(url) as ws:
        ws.forget("kim-55", reason="ticket 313")
        forgotten = forgotten_check(cipher_of(ws))
        assert forgotten is not None
        assert withheld(message, forgotten) == kept


def test_a_message_nested_deeper_than_the_stack_is_looked_through(url: str) -> None:
    deep: Any = "kim@example.com"
    for _ in range(100_000):
        deep = [deep]
    with idstitch.open(url) as ws:
        ws.forget("kim-55", reason="ticket 313")
        forgotten = forgotten_check(cipher_of(ws))
        assert forgotten is not None
        assert withheld({"type": "track", "properties": {"x": deep}}, forgotten) == {"type": "track"}


def test_a_user_id_sent_as_a_json_number_names_the_person(tmp_path: Path) -> None:
    # Some clients send numeric user ids; such a message is refused for its type, and must not
    # keep the person's other values in a rejects file for that.
    with idstitch.open(f"sqlite:///{tmp_path}/n.db") as ws:
        ws.identify("phone", "12345", {"phone": "+33 6 00"})
        ws.forget("12345", reason="ticket 313")
        forgotten = forgotten_check(cipher_of(ws))
        assert forgotten is not None
        message = {"type": "identify", "userId": 12345, "messageId": "m-1",
                   "traits": {"phone": "+33 6 00"}}
        assert withheld(message, forgotten) == {"type": "identify", "messageId": "m-1"}
        assert withheld(msgspec.json.encode(message), forgotten) == {
            "type": "identify", "messageId": "m-1"}
        # A number nobody forgot, a boolean, and the number elsewhere than an id, name no one.
        assert withheld({"type": "identify", "userId": 12346}, forgotten) is None
        assert withheld({"type": "identify", "userId": True}, forgotten) is None
        assert withheld({"type": "track", "properties": {"quantity": 12345}}, forgotten) is None
