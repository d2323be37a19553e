"""Who may do what: bearer tokens for the two roles, and signed room tokens.

Two roles: a *publisher* sends a microphone into a room and controls its session; a *viewer*
only watches. A publisher credential may also watch. Credentials come in two kinds:

* static tokens from the config or the environment (``auth.publisher_tokens``,
  ``MSADTALKER_PUBLISHER_TOKENS``; viewers alike), for operators and trusted apps;
* signed room tokens (``msadtalker token``): HMAC-SHA256 over ``{role, room, exp}`` with
  ``auth.token_secret``, so an app can hand one user one room for one hour without the server
  keeping any state.

Every comparison runs in constant time over digests of equal length, so neither the content
nor the length of a configured token leaks through timing. Nothing here logs or echoes a
token: errors say what is wrong, never what was sent.

With no tokens and no secret configured the server is *open* (every request is a publisher);
``streamer.server.run`` allows that only on a loopback address unless ``--insecure``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

Role = Literal["publisher", "viewer"]
ROLES: tuple[Role, ...] = ("publisher", "viewer")
ROOM_TOKEN_PREFIX = "mst1"
MAX_TOKEN_CHARS = 4096  # longer Authorization values are rejected unread


class AuthError(Exception):
    """A request without the right credential: 401 (who are you?) or 403 (not allowed).
    ``reason``: one word for counting (``missing``, ``malformed``, ``invalid``, ``expired``,
    ``forbidden``); like the message, it never contains the token."""

    def __init__(self, status: int, message: str, reason: str = "invalid") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Credential:
    """What a request proved. ``subject`` identifies the credential (a digest, never the
    token): sessions are bound to the subject that created them. ``room``: the one room a room
    token is for (``None``: any room)."""

    role: Role
    subject: str
    room: str | None = None

    def allows(self, role: Role) -> bool:
        return self.role == "publisher" or role == "viewer"

    def allows_room(self, room: str | None) -> bool:
        return self.room is None or self.room == room


OPEN = Credential(role="publisher", subject="open")


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer ...`` header (``None`` when absent)."""
    if authorization is None:
        return None
    if len(authorization) > MAX_TOKEN_CHARS:
        raise AuthError(401, "Authorization header too long", "malformed")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError(401, 'Authorization must be "Bearer <token>"', "malformed")
    return token.strip()


class Authenticator:
    """Maps a bearer token to a ``Credential`` (see the module docstring)."""

    def __init__(
        self,
        publisher_tokens: Iterable[str] = (),
        viewer_tokens: Iterable[str] = (),
        secret: str = "",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._static: list[tuple[bytes, Role]] = [
            (_digest(t), "publisher") for t in publisher_tokens if t
        ] + [(_digest(t), "viewer") for t in viewer_tokens if t]
        self._secret = secret.encode("utf-8")
        self._clock = clock

    @property
    def open(self) -> bool:
        """No credential is configured: everyone is a publisher."""
        return not self._static and not self._secret

    def authenticate(self, token: str | None) -> Credential:
        if self.open:
            return OPEN
        if token is None:
            raise AuthError(401, "a bearer token is required", "missing")
        if token.startswith(ROOM_TOKEN_PREFIX + ".") and self._secret:
            return self._room_credential(token)
        digest = _digest(token)
        found: Role | None = None
        for expected, role in self._static:
            # No early exit: every configured token is compared, whichever matches.
            if hmac.compare_digest(digest, expected) and found is None:
                found = role
        if found is None:
            raise AuthError(401, "invalid token")
        return Credential(role=found, subject=f"{found}:{digest[:12].hex()}")

    def require(self, token: str | None, role: Role, room: str | None = None) -> Credential:
        """The credential, if it may act as ``role`` (in ``room``); else 401/403."""
        credential = self.authenticate(token)
        if not credential.allows(role):
            raise AuthError(403, f"a {credential.role} token cannot act as {role}", "forbidden")
        if not credential.allows_room(room):
            raise AuthError(403, "this token is for another room", "forbidden")
        return credential

    def _room_credential(self, token: str) -> Credential:
        try:
            prefix, payload_b64, signature_b64 = token.split(".")
            signature = _unb64(signature_b64)
        except (ValueError, binascii.Error):
            raise AuthError(401, "malformed room token", "malformed") from None
        expected = hmac.new(self._secret, f"{prefix}.{payload_b64}".encode(), "sha256").digest()
        if not hmac.compare_digest(signature, expected):
            raise AuthError(401, "invalid token")
        try:
            claims = json.loads(_unb64(payload_b64))
            role, room, expires = claims["role"], claims["room"], float(claims["exp"])
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise AuthError(401, "malformed room token", "malformed") from None
        if role not in ROLES or not isinstance(room, str):
            raise AuthError(401, "malformed room token", "malformed")
        if self._clock() >= expires:
            raise AuthError(401, "token expired", "expired")
        subject = f"room:{hashlib.sha256(token.encode()).hexdigest()[:24]}"
        return Credential(role=role, subject=subject, room=room)


def mint_room_token(secret: str, role: Role, room: str, ttl_s: float, now: float) -> str:
    """A signed token for one ``role`` in one ``room``, valid ``ttl_s`` seconds from ``now``."""
    if not secret:
        raise ValueError("a token secret is needed to sign room tokens")
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if ttl_s <= 0:
        raise ValueError("ttl must be > 0")
    claims = {"role": role, "room": room, "exp": int(now + ttl_s)}
    payload = _b64(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
    signed = f"{ROOM_TOKEN_PREFIX}.{payload}"
    signature = hmac.new(secret.encode("utf-8"), signed.encode(), "sha256").digest()
    return f"{signed}.{_b64(signature)}"
