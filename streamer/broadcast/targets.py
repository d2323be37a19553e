"""Where an output goes, checked and shown safely: RTMP URLs and recording paths.

An RTMP URL is ``rtmp[s]://host[:port]/app/<stream key>``; the stream key (everything after
the application name, the query string and any ``user:password@``) is a secret: it lets
anyone publish on the owner's channel. ``redact`` is the only form that may reach a log, an
answer or a metric label.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from msadtalker.errors import InputError

RTMP_SCHEMES = ("rtmp", "rtmps")
MAX_URL_CHARS = 2048
REDACTED = "<redacted>"
MIN_SECRET_CHARS = 4  # shorter parts are too common to hunt for in a message (and no key)
_FORBIDDEN = re.compile(r"[\x00-\x20\x7f]")  # spaces and control characters


class OutputTargetError(InputError):
    """An output target (URL, kind, path) that cannot be used: the message names it, redacted."""


def check_rtmp_url(url: str) -> str:
    """``url`` when it is a usable ``rtmp://`` or ``rtmps://`` URL, else ``OutputTargetError``
    (the message shows the URL redacted)."""
    if not isinstance(url, str) or not url:
        raise OutputTargetError("url: an rtmp:// or rtmps:// URL is required")
    if len(url) > MAX_URL_CHARS:
        raise OutputTargetError(f"url: longer than {MAX_URL_CHARS} characters")
    if _FORBIDDEN.search(url):
        raise OutputTargetError("url: spaces and control characters are not allowed")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise OutputTargetError(f"url {redact(url)}: not a URL") from None
    if parts.scheme.lower() not in RTMP_SCHEMES:
        raise OutputTargetError(
            f"url {redact(url)}: the scheme must be rtmp:// or rtmps://, not {parts.scheme!r}"
        )
    if not parts.hostname:
        raise OutputTargetError(f"url {redact(url)}: no host")
    if port == 0:
        raise OutputTargetError(f"url {redact(url)}: port 0")
    if not parts.path.strip("/"):
        raise OutputTargetError(f"url {redact(url)}: no application name (rtmp://host/app/key)")
    return url


def redact(url: str) -> str:
    """``url`` without its secrets: the path after the application name, the query and the
    user info are replaced by ``<redacted>`` (``rtmp://host/live2/<redacted>``)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return REDACTED
    if not parts.scheme or not host:
        return REDACTED
    shown_host = f"[{host}]" if ":" in host else host
    netloc = shown_host if port is None else f"{shown_host}:{port}"
    if parts.username or parts.password:
        netloc = f"{REDACTED}@{netloc}"
    segments = [s for s in parts.path.split("/") if s]
    path = f"/{segments[0]}" if segments else ""
    if len(segments) > 1:
        path += f"/{REDACTED}"
    query = f"?{REDACTED}" if parts.query else ""
    return f"{parts.scheme}://{netloc}{path}{query}"


def scrub(text: str, url: str) -> str:
    """``text`` (an FFmpeg error, say) with ``url`` redacted, and its secret parts (stream
    key, query, password) wherever they appear on their own."""
    text = text.replace(url, redact(url))
    try:
        parts = urlsplit(url)
        secrets = [parts.query, parts.password or "", parts.username or ""]
    except ValueError:
        return text
    secrets += [s for s in parts.path.split("/") if s][1:]
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= MIN_SECRET_CHARS:
            text = text.replace(secret, REDACTED)
    return text


def fill_template(template: str, room: str) -> str:
    """A configured URL template for ``room`` (``{room}`` replaced; room ids are URL-safe)."""
    return template.replace("{room}", room)


def recording_path(directory: str | Path, room: str, output_id: str) -> Path:
    """A new recording's file: ``<dir>/<room>-<UTC time>-<output id>.mp4`` (never an existing
    one: the output id is unique)."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return Path(directory) / f"{room}-{stamp}-{output_id}.mp4"
