"""The SDK sessions a device remembers, which tell an SDK reset from a late message.

A session is known by its ``anonymousId``, and where events are encrypted also by its tag: a
keyed hash of it that the service computes (:attr:`SessionMemory.tagger`) and events record in
plaintext beside the sealed value (``sdk_tag``). Once a person is forgotten, the values of the
sessions that ran in its stints read erased, but their tags do not: a device the person used,
now somebody else's, still takes a late message of such a session for late, and a message of
its current session for the current session, as it did before the forget (not for an SDK
reset that would move the device off its person, nor for a new session whose ``anonymousId``
would find that person again).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from datetime import datetime

from idstitch.domain.events import DeviceEvent, IdentityCleared

RECENT_SESSIONS = 50
"""How many ended SDK sessions (their ``anonymousId``) a device remembers: a message of one of
them is late; an ``anonymousId`` older than that is taken for a new session."""
RESET_SUFFIX = "#reset"
"""The message id of the clear an SDK reset implies: the message's own id, suffixed."""


class SessionMemory:
    """The SDK session part of the :class:`~idstitch.domain.device.Device` aggregate."""

    device_id: str
    generation: int
    _key_id: str
    session: str | None
    """The SDK ``anonymousId`` of the current session, once a message carried one (None also
    when it reads erased: then :attr:`session_tag` alone tells it)."""
    session_tag: str | None
    """The current session's tag, where its event recorded one."""
    ended: deque[str]
    """The sessions that ended, oldest first (bounded): each by its tag where it has one, else
    by its ``anonymousId``."""
    _ended: set[str]
    tagger: Callable[[str], str] | None
    """An ``anonymousId`` -> its tag (None: events are not encrypted, nothing reads erased)."""

    def _start_sessions(self) -> None:
        self.session = None
        self.session_tag = None
        self.ended = deque(maxlen=RECENT_SESSIONS)
        self._ended = set()
        self.tagger = None

    def _record(self, event: DeviceEvent) -> None:
        raise NotImplementedError  # the device's

    def _enter(self, sdk_anonymous_id: str | None, sdk_tag: str | None) -> None:
        """A session starts (or its first message names it)."""
        self.session = sdk_anonymous_id
        self.session_tag = sdk_tag

    def _end_session(self) -> None:
        """The current session ends (a clear, or an SDK reset)."""
        key = self.session_tag if self.session_tag is not None else self.session
        if key is None or key in self._ended:
            return
        if len(self.ended) == RECENT_SESSIONS:
            self._ended.discard(self.ended[0])
        self.ended.append(key)
        self._ended.add(key)

    def _session(
        self, sdk_anonymous_id: str | None, message_id: str | None, timestamp: datetime,
        recorded_at: datetime,
    ) -> tuple[str | None, str | None, bool]:
        """What a person-level message's SDK ``anonymousId`` says of the device's session:
        ``(sdk_anonymous_id to record, its tag, late)``. The rule
        (docs/explanation/stitching.md):

        - none, or the current session's: nothing to record;
        - an ended session's: the message is late (recorded, not applied);
        - the first the current session sees: adopted (recorded with the event);
        - any other: the SDK was reset, a new anonymous session starts: the clear it implies
          is recorded first (its message id the message's, suffixed ``#reset``).
        """
        if sdk_anonymous_id is None or sdk_anonymous_id == self.session:
            return None, None, False
        # Not the current session by its value: by its tag, when the value reads erased.
        tag = None if self.tagger is None else self.tagger(sdk_anonymous_id)
        if tag is not None and tag == self.session_tag:
            return None, None, False
        if sdk_anonymous_id in self._ended or (tag is not None and tag in self._ended):
            return sdk_anonymous_id, tag, True
        if self.session is None and self.session_tag is None:
            return sdk_anonymous_id, tag, False
        self._record(IdentityCleared(
            key_id=self._key_id, device_id=self.device_id, generation=self.generation + 1,
            sdk_anonymous_id=sdk_anonymous_id, sdk_tag=tag,
            message_id=None if message_id is None else message_id + RESET_SUFFIX,
            timestamp=timestamp, recorded_at=recorded_at))
        return None, None, False
