"""Log set-up: plain text or one JSON object per line, each line tagged with what it is about.

A live server logs for many sessions at once; a line is only useful when it says which one.
The context (``session_id``, ``room``) lives in context variables: ``log_context(...)`` binds
it for the code below it, every asyncio task started there inherits it, and ``bind(fields)``
binds it in a thread for good (context variables do not cross ``run_in_executor`` by
themselves) or for the rest of a request's task. The process-wide ``worker`` index of
``serve --workers`` is a field of the handler's filter, so lines from threads nobody bound
carry it too.

``configure_logging(level, fmt)`` installs one stderr handler on the root logger:

* ``text``: ``time LEVEL logger [session=… room=… worker=…]: message`` (the bracket only when
  something is known);
* ``json``: ``{"time", "level", "logger", "message", "session_id"?, "room"?, "worker"?,
  "exception"?}`` per line, for log shippers (``msadtalker --log-format json serve``).
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime
import json
import logging
import sys
from collections.abc import Iterator, Mapping
from typing import Literal, TextIO

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")
CONTEXT_FIELDS = ("session_id", "room", "worker")

_SESSION: contextvars.ContextVar[str | None] = contextvars.ContextVar("session_id", default=None)
_ROOM: contextvars.ContextVar[str | None] = contextvars.ContextVar("room", default=None)
_VARS = {"session_id": _SESSION, "room": _ROOM}
_OURS = "_msadtalker_handler"  # marks the handler configure_logging installed
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s%(context)s: %(message)s"


@contextlib.contextmanager
def log_context(session_id: str | None = None, room: str | None = None) -> Iterator[None]:
    """Tag every log line of the code inside (and of the tasks it starts) with these fields;
    ``None`` leaves a field as it is."""
    tokens = [
        (var, var.set(value))
        for var, value in ((_SESSION, session_id), (_ROOM, room))
        if value is not None
    ]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def current_context() -> dict[str, str]:
    """The bound fields, to hand to a thread (``bind``) or a new context."""
    return {name: value for name, var in _VARS.items() if (value := var.get()) is not None}


def bind(fields: Mapping[str, str]) -> None:
    """Bind ``fields`` for the rest of the calling thread or task: a ``ThreadPoolExecutor``'s
    ``initializer`` (every job its thread runs logs with them, at no per-job cost), or a
    request handler (aiohttp runs each request in a task of its own)."""
    for name, value in fields.items():
        _VARS[name].set(value)


def context_with(**fields: str) -> contextvars.Context:
    """A copy of the current context with ``fields`` bound: for ``asyncio.create_task(...,
    context=...)``, so a task logs with them whoever happens to start it."""
    context = contextvars.copy_context()
    for name, value in fields.items():
        context.run(_VARS[name].set, value)
    return context


class ContextFilter(logging.Filter):
    """Puts the bound fields (and the process's ``worker``) on every record it sees."""

    def __init__(self, worker: int | None = None) -> None:
        super().__init__()
        self.worker = worker

    def filter(self, record: logging.LogRecord) -> bool:
        for name, var in _VARS.items():
            if getattr(record, name, None) is None:
                setattr(record, name, var.get())
        if getattr(record, "worker", None) is None:
            record.worker = self.worker
        return True


class TextFormatter(logging.Formatter):
    """The classic line, with ``[session=… room=… worker=…]`` after the logger when known."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        known = [
            f"{short}={value}"
            for name, short in (("session_id", "session"), ("room", "room"), ("worker", "worker"))
            if (value := getattr(record, name, None)) is not None
        ]
        record.context = f" [{' '.join(known)}]" if known else ""
        return super().format(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line (see the module docstring); never raises for odd messages."""

    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
        entry: dict[str, object] = {
            "time": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, default=str, ensure_ascii=False)


def make_handler(
    fmt: LogFormat = "text", stream: TextIO | None = None, worker: int | None = None
) -> logging.Handler:
    """A stream handler (stderr by default) with the context filter and the chosen format."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.addFilter(ContextFilter(worker))
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    return handler


def configure_logging(level: int, fmt: LogFormat = "text", worker: int | None = None) -> None:
    """The command line's logging: one handler on the root logger. Like ``basicConfig``, it
    leaves alone a root logger someone else has set up (a test runner, an embedding app)."""
    root = logging.getLogger()
    if any(not getattr(h, _OURS, False) for h in root.handlers):
        return
    for old in list(root.handlers):
        root.removeHandler(old)
    handler = make_handler(fmt, worker=worker)
    setattr(handler, _OURS, True)
    root.addHandler(handler)
    root.setLevel(level)
