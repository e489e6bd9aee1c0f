"""Ids: of devices (their aggregates), anonymous sessions, persons, server-side streams.

Every id idstitch mints is a uuid5 of what the event names, so every store that holds the same
traffic mints the same ids (log positions differ between stores) and a replay mints them again.
"""

from __future__ import annotations

from binascii import b2a_base64
from hashlib import blake2b, sha1
from operator import attrgetter
from uuid import NAMESPACE_URL, UUID, SafeUUID, uuid5

DEVICE_NAMESPACE = uuid5(NAMESPACE_URL, "https://idstitch.dev/device")
PERSON_NAMESPACE = uuid5(NAMESPACE_URL, "https://idstitch.dev/person")
MERGE_NAMESPACE = uuid5(NAMESPACE_URL, "https://idstitch.dev/merge")
_DEVICE_NS = DEVICE_NAMESPACE.bytes
_PERSON_NS = PERSON_NAMESPACE.bytes
_MERGE_NS = MERGE_NAMESPACE.bytes

def _uuid5_digest(namespace: bytes, name: str) -> bytearray:
    """The 16 bytes of ``uuid.uuid5(UUID(bytes=namespace), name)``, straight from sha1."""
    digest = bytearray(sha1(namespace + name.encode(), usedforsecurity=False).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    return digest


def _dashed(h: str) -> str:
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def uuid5_text(namespace: bytes, name: str) -> str:
    """``str(uuid.uuid5(UUID(bytes=namespace), name))`` without building UUID objects.

    Ids are minted on the hot paths (every new device, anonymous session and person); the
    standard library's UUID construction costs several times the hash itself.
    """
    return _dashed(_uuid5_digest(namespace, name).hex())


def merge_id(cause: str, kind: str) -> str:
    """The id of the merge record of kind ``kind`` that the event named by ``cause`` (its
    stream and its number there, ``stream#n``) causes: what every store holding the same
    traffic names it."""
    return uuid5_text(_MERGE_NS, f"{cause}:{kind}")


class AggregateId(UUID):
    """A device's aggregate id: a UUID that keeps its text forms.

    Every stored event carries the id as text (hex in the SQL stores, the dashed form in the
    in-memory recorder); formatting it anew for each event cost about a third of encoding it.
    """

    __slots__ = ("_hex", "_text")
    _hex: str
    _text: str

    def __init__(self, uuid: UUID) -> None:
        super().__init__(int=uuid.int)
        # UUID forbids attribute assignment (it is immutable); these are set once, here.
        object.__setattr__(self, "_hex", uuid.hex)
        object.__setattr__(self, "_text", str(uuid))

    @classmethod
    def _of_digest(cls, digest: bytearray) -> AggregateId:
        """From a uuid5 digest, without UUID.__init__'s checks (the digest is well formed):
        half the cost, on every new device."""
        self = object.__new__(cls)
        h = digest.hex()
        object.__setattr__(self, "int", int.from_bytes(digest))
        object.__setattr__(self, "is_safe", SafeUUID.unknown)
        object.__setattr__(self, "_hex", h)
        object.__setattr__(self, "_text", _dashed(h))
        return self

    # A C getter, no Python frame: it is read for every event appended.
    hex = property(attrgetter("_hex"), doc="The 32 hex digits.")

    def __str__(self) -> str:
        return self._text

    def __reduce__(self) -> tuple[type[AggregateId], tuple[UUID]]:
        # UUID's own pickling restores only its int: the cached text forms would be missing.
        return AggregateId, (UUID(int=self.int),)


def device_aggregate_id(device_id: str) -> AggregateId:
    """The deterministic aggregate id of a device: uuid5 of its ``device_id``."""
    return AggregateId._of_digest(_uuid5_digest(_DEVICE_NS, device_id))


SERVER_PREFIX = "server:"
"""The device id of a user's server-side stream: this prefix, then a hash of the user id."""


def server_stream_id(user_id: str) -> str:
    """The device id of the server-side stream of a user id: ``server:`` and 32 hex digits of
    a BLAKE2b hash of the user id.

    A hash, not the user id itself: every event repeats its device id in plaintext (an audit
    reads one row on its own), and a forgotten person's user id must not stay readable in the
    log (api.md, ``forget``). The same user id always names the same stream."""
    digest = blake2b(user_id.encode(), digest_size=16, person=b"idstitch-server")
    return SERVER_PREFIX + digest.hexdigest()


def anonymous_id_for(device_id: str, generation: int) -> str:
    """The anonymous id of a device's ``generation``-th anonymous session (replays mint the same)."""
    # The aggregate id's 16 bytes are the second uuid5's namespace: straight from the digest
    # (its text, formatted and parsed back, cost a third of this call).
    return uuid5_text(bytes(_uuid5_digest(_DEVICE_NS, device_id)), str(generation))


def anonymous_person_id(anonymous_id: str) -> str:
    """The person every anonymous session starts with."""
    return uuid5_text(_PERSON_NS, "anonymous:" + anonymous_id)


def minted_person_id(device_id: str, seq: int) -> str:
    """A person minted for an unknown user id on a device that was identified as someone else,
    by its ``seq``-th event: derived from what the event names, so every store that holds the
    same traffic mints the same id (log positions differ between stores)."""
    return uuid5_text(_PERSON_NS, f"identified:{device_id}#{seq}")


def new_person_id(device_id: str, position: int) -> str:
    """The same, as stores built before ids were event-derived minted it: from the position."""
    return uuid5_text(_PERSON_NS, f"identified:{device_id}:{position}")


_URLSAFE = bytes.maketrans(b"+/", b"-_")


def subject_key_id(device_id: str, generation: int, user_id: str | None,
                   erasures: int = 0) -> str:
    """The id of the data subject key that seals the personal values of the events a device
    records in one stint: one anonymous session (``generation``) with one person (``user_id``,
    None while anonymous). Deterministic, so a rebuilt device stamps the same id; a hash, so
    the id does not show the user id (see docs/explanation/erasure-and-keys.md for its limit).
    ``erasures``: how many of the device's identifies read erased (their person forgotten):
    each starts a stint of a new subject, whose key was never destroyed.
    """
    text = f"{device_id}\x1f{generation}\x1f{'' if user_id is None else user_id}"
    if erasures:
        text += f"\x1f{erasures}"
    # 96 bits, base64url: 16 characters on every event (no collision among 2**40 stints).
    # base64.urlsafe_b64encode's very steps, without its two Python-level calls.
    return (b2a_base64(blake2b(text.encode(), digest_size=12).digest(), newline=False)
            .translate(_URLSAFE).decode())
