"""Ingest refuses messages that name a forgotten identifier (right to erasure).

Wraps a format's ``to_commands``, and guards the workspace's own commands (:func:`guard_of`,
merges naming a forgotten person too): a command carrying a user id or an email (identify's user id
and ``email`` trait, a profile update's ``email``, activate's customer user id) whose keyed
hash is among the suppressed raises :class:`~idstitch.domain.errors.Suppressed`, which ingest
reports as the message's rejection reason; so does a message of any type whose ``userId`` is
forgotten (a device ``track`` or a ``screen`` of the person too). Nothing of the identifier is
stored to check it: only HMAC-SHA256 digests (:meth:`idstitch.adapters.crypto.SubjectCipher.digest`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from idstitch.adapters.crypto import SubjectCipher
from idstitch.domain.commands import (
    Activate,
    Command,
    Identify,
    MergePersons,
    SetProfileAttributes,
)
from idstitch.domain.errors import Suppressed

ToCommands = Callable[[Any], Sequence[Command] | None]


def identifiers_of(command: object) -> list[tuple[str, str]]:
    """The (field, identifier) pairs a command names."""
    out: list[tuple[str, str]] = []
    if type(command) is Identify:
        out.append(("userId", command.user_id))
        email = (command.traits or {}).get("email")
    elif type(command) is SetProfileAttributes:
        email = (command.traits or {}).get("email")
        once = (command.set_once or {}).get("email")
        if isinstance(once, str):
            out.append(("set_once.email", once))
    elif type(command) is Activate and command.customer_user_id is not None:
        out.append(("customer_user_id", command.customer_user_id))
        email = None
    elif type(command) is MergePersons:
        return [("primary", command.primary), ("secondary", command.secondary)]
    else:
        return out
    if isinstance(email, str):
        out.append(("traits.email", email))
    return out


def check(cipher: SubjectCipher, command: object, cleared: object = None) -> None:
    """Raise Suppressed if the command names a forgotten identifier (``cleared``: one already
    found not to be, not hashed again)."""
    if not cipher.any_suppressed():
        return  # nothing forgotten: no identifier to look at (runs for every command)
    for field, identifier in identifiers_of(command):
        # A value of the wrong type is the handler's to refuse, naming the field.
        if (isinstance(identifier, str) and identifier != cleared
                and cipher.is_suppressed(identifier)):
            raise Suppressed(f"{field}: names a person who was forgotten (right to erasure); "
                             "its traffic is refused")


def guard_of(cipher: SubjectCipher | None) -> Callable[[object], None] | None:
    """The message bus's check of every command (None when encryption is off: nothing can
    have been forgotten)."""
    if cipher is None:
        return None

    def guard(command: object) -> None:
        check(cipher, command)

    return guard


def suppressing(to_commands: ToCommands, cipher: SubjectCipher | None) -> ToCommands:
    """``to_commands``, refusing the messages that name a forgotten identifier."""
    if cipher is None:
        return to_commands

    def checked(message: Any) -> Sequence[Command] | None:
        if not cipher.any_suppressed():
            return to_commands(message)  # one look per message while nothing is forgotten
        # The message's own userId first, whatever its type: a device `track` (which the SDK
        # sends on every app start of a logged-in device) would otherwise record a token and
        # attributes on the forgotten person's devices, and a `screen` or `page` of the person
        # is refused rather than counted as ignored (its traffic is refused, spec §4).
        user_id = getattr(message, "user_id", None)
        if isinstance(user_id, str) and cipher.is_suppressed(user_id):
            raise Suppressed("userId: names a person who was forgotten (right to erasure); "
                             "its traffic is refused")
        commands = to_commands(message)
        for command in commands or ():
            check(cipher, command, user_id)  # (an identify's user id: looked at above)
        return commands

    return checked
