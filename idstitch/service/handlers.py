"""One handler per command: load the aggregate, let it decide (identity-model.md §2, §4).

A handler is a function of (checked command, unit of work): the command was checked where it
entered (:mod:`idstitch.service.checks`); the handler reads what it needs about persons through
``uow.persons`` (a ``cio_`` id must name a live person; a merge's two sides; the merge an unmerge
undoes), loads the aggregate and has it decide: ``uow.devices.get(device_id).handle(cmd, now)``
for a device, ``uow.decisions.get().handle(cmd, now)`` for a person-level decision. The unit of
work commits (:func:`run` runs a message's handlers on it: a public call is a batch of one
message, an ingest batch many). :data:`HANDLERS` is the one map from command type to handler;
the message bus and ingest both use it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from msgspec.structs import replace

from idstitch.domain import rules
from idstitch.domain.commands import (
    Activate,
    ClearIdentify,
    CollectDeviceAttributes,
    Command,
    DeviceCommand,
    ForgetPerson,
    Identify,
    Logout,
    MergePersons,
    RecordPushStatus,
    RegisterDeviceToken,
    RemoveDeviceToken,
    SetDeviceAttributes,
    SetProfileAttributes,
    Unmerge,
)
from idstitch.domain.errors import InvalidCommand, UnknownPerson
from idstitch.service.uow import UnitOfWork


def _check_person_ref(uow: UnitOfWork, field: str, user_id: str) -> None:
    """A ``cio_<person_id>`` must name a live, identified person as the log stands now."""
    if rules.classify(user_id) != "cio":
        return
    person_id = user_id[len(rules.PERSON_PREFIX):]
    # Earlier messages (of this batch, too) may have created or retired that person.
    row = uow.persons.row(person_id)
    if row is None:
        raise UnknownPerson(field, person_id)
    if row.retired_into is not None:
        raise UnknownPerson(field, person_id, f"was merged into {row.retired_into}")
    if not row.identified:
        raise UnknownPerson(field, person_id, "is anonymous: cio_ names identified persons")


def activate(cmd: Activate, uow: UnitOfWork) -> None:
    """The SDK was configured on the device; with a customer user id it identifies too."""
    if cmd.customer_user_id is not None:
        _check_person_ref(uow, "customer_user_id", cmd.customer_user_id)
    uow.devices.get(cmd.device_id).handle(cmd, uow.now)


def identify(cmd: Identify, uow: UnitOfWork) -> None:
    """Identify a person on the device: an id, an email, or ``cio_<person_id>``."""
    _check_person_ref(uow, "user_id", cmd.user_id)
    uow.devices.get(cmd.device_id).handle(cmd, uow.now)


def on_device(cmd: DeviceCommand, uow: UnitOfWork) -> None:
    """A device command that reads nothing about persons: the device decides."""
    uow.devices.get(cmd.device_id).handle(cmd, uow.now)


def _identified_person(uow: UnitOfWork, field: str, identifier: str) -> str:
    """The person id of the identified person an identifier finds now (UnknownPerson if none)."""
    profile = uow.persons.profile(identifier)
    if profile is None:
        raise UnknownPerson(field, identifier)
    if not profile.identified:
        raise UnknownPerson(field, identifier, "is anonymous: only identified persons merge")
    person_id: str = profile.person_id
    return person_id


def merge_persons(cmd: MergePersons, uow: UnitOfWork) -> None:
    """An explicit merge (identity-model.md §4): both sides identified, and not the same."""
    primary, secondary = cmd.primary, cmd.secondary
    primary_id = _identified_person(uow, "primary", primary)
    secondary_id = _identified_person(uow, "secondary", secondary)
    if primary_id == secondary_id:
        raise InvalidCommand("secondary", f"{secondary!r} is the same person as the primary "
                                          f"({primary_id})")
    # Recorded as the persons the identifiers name themselves: a merge undone later (or
    # earlier) must not leave this one joined to the side the identifier was not given for.
    uow.decisions.get().handle(replace(cmd, primary=_named(uow, primary, primary_id),
                                       secondary=_named(uow, secondary, secondary_id),
                                       named=True), uow.now)


def _named(uow: UnitOfWork, identifier: str, live: str) -> str:
    """The identified person an identifier names itself (its user id's holder, the person of
    a ``cio_`` or person id), not following merges; ``live``, the person it finds, for an
    email (within a family of merged persons its row keeps the member that first claimed it,
    whoever's device claimed it since) and when what it names is no identified person (an
    anonymous session merged into ``live``: once that merge were undone, an explicit merge
    must not join an anonymous person)."""
    if rules.classify(identifier) == "email":
        return live
    named = uow.persons.named(identifier)
    if named is None or named == live:
        return live
    row = uow.persons.row(named)
    return named if row is not None and row.identified else live


UNDOABLE = frozenset({"explicit", "merged"})
"""The kinds of merge record an unmerge undoes: explicit merges and anonymous merges."""


def unmerge(cmd: Unmerge, uow: UnitOfWork) -> None:
    """Undo a merge (identity-model.md §4): an explicit one, or an anonymous person's merge on
    identify; not a conversion or a switch (nothing was merged), not one undone already."""
    merge_id = cmd.merge_id
    row = uow.persons.merge(merge_id)
    if row is None:
        raise InvalidCommand("merge_id", f"no merge {merge_id!r}")
    if row.kind == "unmerged":
        raise InvalidCommand("merge_id", f"merge {merge_id!r} was undone already")
    if row.kind not in UNDOABLE:
        raise InvalidCommand("merge_id", f"{merge_id!r} is a {row.kind} record, not a merge: "
                                         "nothing was merged to undo")
    for person_id in (row.source, row.target):
        person = uow.persons.row(person_id)
        if person is not None and person.nameless:
            # Forgotten since (with the merge, both sides were): what the sides held is
            # shredded, so they cannot become what they would have been without it.
            raise InvalidCommand("merge_id", f"merge {merge_id!r} joined a person who was "
                                             "forgotten since: it cannot be undone")
    uow.decisions.get().handle(cmd, uow.now)


def forget_person(cmd: ForgetPerson, uow: UnitOfWork) -> None:
    """Record a forget (identity-model.md §4). The workspace checked the person and destroyed
    its keys before this runs; only pseudonymous ids are recorded (the person's, and its
    family's persons and devices, for the custom projections' purge)."""
    uow.decisions.get().handle(cmd, uow.now)


HANDLERS: dict[type[Any], Callable[[Any, UnitOfWork], None]] = {
    Activate: activate,
    Identify: identify,
    SetProfileAttributes: on_device,
    SetDeviceAttributes: on_device,
    CollectDeviceAttributes: on_device,
    RegisterDeviceToken: on_device,
    RemoveDeviceToken: on_device,
    RecordPushStatus: on_device,
    ClearIdentify: on_device,
    Logout: on_device,
    MergePersons: merge_persons,
    Unmerge: unmerge,
    ForgetPerson: forget_person,
}
"""The one map from command type to handler."""


def run(uow: UnitOfWork, index: int, commands: Sequence[Command]) -> bool:
    """Run a checked message's handlers on the unit of work (:meth:`UnitOfWork.run`): whole,
    or nothing of it stays. False: a duplicate."""
    return uow.run(index, commands, HANDLERS)


def reads_persons(commands: Sequence[Command]) -> bool:
    """Whether a checked message's handlers read about persons (a ``cio_`` id, a merge, an
    unmerge): ingest runs such a message as soon as it is read, so that its read answers as the
    log stands then (a projecting child has committed everything before it)."""
    for command in commands:
        kind = type(command)
        if kind is Identify:
            if command.user_id.startswith(rules.PERSON_PREFIX):  # type: ignore[union-attr]
                return True
        elif kind is Activate:
            user_id = command.customer_user_id  # type: ignore[union-attr]
            if user_id is not None and user_id.startswith(rules.PERSON_PREFIX):
                return True
        elif kind in (MergePersons, Unmerge):
            return True
    return False
