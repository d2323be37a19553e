"""Every refusal is a JSON answer: ``{"error": "...", "status": N}``.

Handlers raise ``RequestError`` for what the client must fix (or wait for) and
``OfferError`` for an unusable offer; the middleware turns these, aiohttp's own HTTP errors
(404 route, 405 method, 413 body) and a failure of ours (500, logged with its traceback) into
that body. Only ``Retry-After`` and ``Allow`` headers are kept from an error.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from streamer.server.cluster import OwnerUnreachable
from streamer.server.offers import OfferError

log = logging.getLogger(__name__)

_KEPT_HEADERS = ("retry-after", "allow")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class RequestError(Exception):
    """A request the client must fix or retry; becomes a JSON error with ``status``
    (``fields``: more keys of that body, for a machine to read, e.g. ``ended``)."""

    def __init__(
        self,
        status: int,
        message: str,
        headers: Mapping[str, str] | None = None,
        fields: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.headers = dict(headers or {})
        self.fields = dict(fields or {})


def error_response(
    status: int,
    message: str,
    headers: Mapping[str, str] | None = None,
    fields: Mapping[str, Any] | None = None,
) -> web.Response:
    extra = {k: v for k, v in (headers or {}).items() if k.lower() in _KEPT_HEADERS}
    body = {**(fields or {}), "error": message, "status": status}
    return web.json_response(body, status=status, headers=extra or None)


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except RequestError as exc:
        return error_response(exc.status, str(exc), exc.headers, exc.fields)
    except OfferError as exc:
        return error_response(exc.status, str(exc))
    except OwnerUnreachable as exc:
        return error_response(503, str(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        reason = exc.reason
        if exc.status == 413:
            reason = "request body too large"
        return error_response(exc.status, reason, headers=exc.headers)
    except (asyncio.CancelledError, ConnectionResetError):
        raise  # the client went away: there is no one to answer
    except Exception:
        # A bug, not the client's fault: still a JSON answer, and the details in the log.
        log.exception("%s %s failed", request.method, request.path)
        return error_response(500, "internal server error")
