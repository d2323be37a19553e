"""What every answer carries for the browser's protection, and who may call from elsewhere.

* ``security_headers(server)``: an ``on_response_prepare`` hook, so that every answer the app
  makes has them (pages, JSON, errors, static files): a Content-Security-Policy that lets the
  pages load only from this server (``frame-ancestors`` from ``server.frame_ancestors``, so an
  app or an OBS dock can embed the viewer when the operator says so),
  ``X-Content-Type-Options: nosniff``, ``Referrer-Policy: no-referrer`` (a page's address
  never travels on), and ``Server: msadtalker`` instead of the Python and aiohttp versions.
* CORS, off by default: with ``server.cors_origins`` a page from exactly those origins may
  call the API (``cors_preflight`` answers the browser's preflight; the hook adds
  ``Access-Control-Allow-Origin`` to the answers). Tokens travel in ``Authorization``, not in
  cookies, so no credentials mode is ever allowed.
* ``static_files(web_dir)``: the page assets, the files found under ``web_dir`` at start-up
  and nothing else (no path is ever joined from a request), unknown ones a JSON 404.
* ``RedactingAccessLogger``: the access log without the ``?token=`` the pages are opened with.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import hdrs, web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.typedefs import Handler, Middleware
from aiohttp.web_request import BaseRequest

from streamer.config import ServerConfig
from streamer.server.errors import RequestError

SERVER_NAME = "msadtalker"
CORS_METHODS = "GET, POST, DELETE"
CORS_HEADERS = "Authorization, Content-Type"
CORS_MAX_AGE_S = 600
REDACTED = "<redacted>"
_TOKEN_PARAM = re.compile(r"(^|[&;])token=[^&;]*")
ResponseHook = Callable[[web.Request, web.StreamResponse], Awaitable[None]]


def content_security_policy(frame_ancestors: tuple[str, ...]) -> str:
    """The pages' policy: scripts, styles, media and calls from this server only; the avatar
    arrives as a MediaStream (``blob:``/``mediastream:``), the favicon is ``data:``."""
    return "; ".join(
        (
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data: blob:",
            "media-src 'self' blob: mediastream:",
            "connect-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            f"frame-ancestors {' '.join(frame_ancestors)}",
        )
    )


def security_headers(server: ServerConfig) -> ResponseHook:
    """The ``on_response_prepare`` hook (see the module docstring)."""
    fixed = {
        hdrs.SERVER: SERVER_NAME,
        "Content-Security-Policy": content_security_policy(server.frame_ancestors),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }
    origins = frozenset(server.cors_origins)

    async def hook(request: web.Request, response: web.StreamResponse) -> None:
        response.headers.update(fixed)
        origin = request.headers.get(hdrs.ORIGIN)
        if origins:
            response.headers.add(hdrs.VARY, hdrs.ORIGIN)
        if origin is not None and origin in origins:
            response.headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = origin
            # Location, ETag, Link: what a WHIP/WHEP client in a page reads of a 201.
            response.headers[hdrs.ACCESS_CONTROL_EXPOSE_HEADERS] = (
                "Retry-After, Location, ETag, Link"
            )

    return hook


def cors_preflight(origins: tuple[str, ...]) -> Middleware:
    """Answers a browser's CORS preflight (``OPTIONS`` with ``Origin`` and
    ``Access-Control-Request-Method``) from one of ``origins``; any other ``OPTIONS`` goes on
    to the router (a 405, which the browser takes as a refusal)."""
    allowed = frozenset(origins)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        is_preflight = (
            request.method == hdrs.METH_OPTIONS
            and hdrs.ACCESS_CONTROL_REQUEST_METHOD in request.headers
        )
        if not is_preflight or request.headers.get(hdrs.ORIGIN) not in allowed:
            return await handler(request)
        return web.Response(
            status=204,
            headers={
                hdrs.ACCESS_CONTROL_ALLOW_METHODS: CORS_METHODS,
                hdrs.ACCESS_CONTROL_ALLOW_HEADERS: CORS_HEADERS,
                hdrs.ACCESS_CONTROL_MAX_AGE: str(CORS_MAX_AGE_S),
            },
        )

    return middleware


def static_files(web_dir: Path) -> Handler:
    """``GET /static/{path}``: the files under ``web_dir`` when the server started (hidden
    ones left out), ``no-cache``; anything else a JSON 404."""
    files: dict[str, Path] = {}
    if web_dir.is_dir():
        for path in sorted(web_dir.rglob("*")):
            relative = path.relative_to(web_dir)
            if path.is_file() and not any(part.startswith(".") for part in relative.parts):
                files[relative.as_posix()] = path

    async def handler(request: web.Request) -> web.StreamResponse:
        path = files.get(request.match_info["path"])
        if path is None:
            raise RequestError(404, "no such file")
        return web.FileResponse(path, headers={"Cache-Control": "no-cache"})

    return handler


class RedactingAccessLogger(AbstractAccessLogger):
    """aiohttp's access log, one INFO line per request, without secrets: a ``token`` in the
    query (the pages take one from ``?token=``) is replaced, and no header is logged (an
    ``Authorization`` never is)."""

    def log(self, request: BaseRequest, response: web.StreamResponse, time: float) -> None:
        if not self.logger.isEnabledFor(logging.INFO):
            return
        # As sent (percent-encoded): a client cannot write a line break into the log.
        url = request.rel_url
        query = _TOKEN_PARAM.sub(rf"\g<1>token={REDACTED}", url.raw_query_string)
        target = url.raw_path + (f"?{query}" if query else "")
        self.logger.info(
            '%s "%s %s" %d %d %.1f ms',
            request.remote,
            request.method,
            target,
            response.status,
            response.body_length,
            1000 * time,
        )
