"""Suppressed identifiers: the keyed hashes (HMAC-SHA256 under a workspace secret kept in
the key store) of a forgotten person's identifiers, which later commands naming them are
refused by. Kept beside the data subjects' keys, by the cipher that also holds those
(:class:`~idstitch.adapters.crypto.SubjectCipher`)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from time import monotonic

from idstitch.domain.errors import Suppressed
from idstitch.domain.ports import KeyStore

SUPPRESSION_REFRESH = 1.0
"""Seconds a process trusts its copy of the suppressed identifiers' digests."""
SESSION_TAG_PREFIX = b"sdk-session\x00"
"""What an SDK session's tag hashes before its ``anonymousId`` (no identifier holds a NUL)."""
SUPPRESSION_KEY = "workspace:suppression"
"""The key id of the workspace's secret for the keyed hashes of suppressed identifiers."""


class Suppression:
    """The suppressed identifiers' digests as this process knows them (a mixin of the cipher,
    which owns :attr:`keys` and the key cache dropped when another process forgot someone)."""

    keys: KeyStore

    def drop_cache(self) -> None:
        """Forget every cached key (the cipher's)."""
        raise NotImplementedError

    def _start_suppression(self) -> None:
        self._mac: hmac.HMAC | None = None
        self._suppressed: frozenset[bytes] | set[bytes] = frozenset()
        self._suppressed_at = -SUPPRESSION_REFRESH - 1.0
        self.forgets = 0
        """How many times this process found that another one forgot somebody (new
        suppressed digests in the key store)."""
        self.mark = 0
        """The forgets' mark (:data:`~idstitch.domain.ports.SUPPRESSION_MARK`) this process
        read the suppressed digests after."""

    def _keyed(self) -> hmac.HMAC:
        mac = self._mac
        if mac is None:
            # Once per process: creating the secret is a write (a transaction) on SQL key
            # stores; the keyed state is then copied per identifier.
            secret = self.keys.create(SUPPRESSION_KEY)
            if secret is None:
                raise Suppressed("the workspace's suppression secret was destroyed")
            mac = self._mac = hmac.new(secret, digestmod=hashlib.sha256)
        return mac

    def secret_ready(self) -> None:
        """Make sure the workspace's secret exists (created by the first call in a store, a
        write: call it outside any read transaction)."""
        self._keyed()

    def digest(self, identifier: str) -> bytes:
        """The keyed hash (HMAC-SHA256, the workspace's secret) of a normalised identifier."""
        # Emails compare case-insensitively (as the identity projection does); user ids exactly.
        text = identifier.strip().lower() if "@" in identifier else identifier
        one = self._keyed().copy()
        one.update(text.encode())
        return one.digest()

    def session_tag(self, sdk_anonymous_id: str) -> str:
        """The tag of an SDK session (see :mod:`idstitch.domain.sdk_sessions`): the keyed hash
        of its ``anonymousId``, apart from the suppressed identifiers' (a prefix no identifier
        digest is taken of), 16 bytes in hex. Recorded in plaintext: only a holder of the
        workspace's secret can tell which ``anonymousId`` it is of."""
        one = self._keyed().copy()
        one.update(SESSION_TAG_PREFIX + sdk_anonymous_id.encode())
        return one.digest()[:16].hex()

    def any_suppressed(self) -> bool:
        """Whether any identifier is forgotten (as :meth:`is_suppressed` sees the key store):
        ingest asks this once per command and skips the per-identifier checks while nothing
        is (the usual case)."""
        self._refresh()
        return bool(self._suppressed)

    def _refresh(self) -> None:
        """Read the suppressed digests again, at most every :data:`SUPPRESSION_REFRESH`
        seconds. New ones mean another process forgot somebody: every cached key is dropped
        (some were destroyed there) and :attr:`forgets` counts it, so that the device writer
        drops its cached devices too (a cached device writes under its stint's key)."""
        now = monotonic()
        if now - self._suppressed_at > SUPPRESSION_REFRESH:
            found = self.keys.suppressed_digests()
            if not found <= self._suppressed:
                self.drop_cache()
                self.forgets += 1
            self._suppressed = found
            self._suppressed_at = now

    def marked(self, mark: int) -> None:
        """An append read the forgets' mark ``mark``, above :attr:`mark`: another process
        suppressed identifiers since. Read the digests again now, not within
        :data:`SUPPRESSION_REFRESH`."""
        self._suppressed_at = -SUPPRESSION_REFRESH - 1.0
        self._refresh()
        self.mark = max(self.mark, mark)

    def is_suppressed(self, identifier: str) -> bool:
        """True if ``identifier`` (user id or email) belongs to a forgotten person.

        Checked against this process's copy of the suppressed digests, read again from the
        key store at most every :data:`SUPPRESSION_REFRESH` seconds (one query per second,
        not one per message): a forget in this process counts at once, one in another
        process within that delay."""
        self._refresh()
        # Nothing forgotten yet (the usual case): no hash to compute.
        return bool(self._suppressed) and self.digest(identifier) in self._suppressed

    def suppress(self, identifiers: Iterable[str]) -> None:
        """Record the keyed hashes of forgotten identifiers (here at once, elsewhere within
        :data:`SUPPRESSION_REFRESH`)."""
        digests = [self.digest(i) for i in identifiers]
        self.keys.suppress(digests)
        self._suppressed = self._suppressed | set(digests)

    def suppressed_count(self) -> int:
        """How many digests the key store holds (the forgets' mark a forget raises to, once
        it has suppressed its identifiers), read again now: every one of them is in this
        process's copy."""
        self._suppressed_at = -SUPPRESSION_REFRESH - 1.0
        self._refresh()
        return len(self._suppressed)
