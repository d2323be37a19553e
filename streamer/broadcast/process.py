"""The server's side of one encoder process (``streamer.broadcast.child``).

``send`` never waits: a frame goes into the pipe, or, when the process has not taken what it
was given (a slow encoder, a far end that stopped reading), it is dropped and the caller
counts it. The process is ended gently by closing its stdin (``finish``: it flushes and
writes the trailer) within a deadline, or at once by ``kill``.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator

from streamer.broadcast.encoder import EncoderSettings
from streamer.broadcast.wire import Report, pack_frame
from streamer.types import VideoFrame

log = logging.getLogger(__name__)
CHILD_MODULE = "streamer.broadcast.child"
MAX_REPORT_BYTES = 64 * 1024


class EncoderProcess:
    def __init__(self, process: asyncio.subprocess.Process, max_buffered_frames: int) -> None:
        self._process = process
        self._max_buffered = max_buffered_frames
        self._input_closed = False

    @classmethod
    async def start(cls, settings: EncoderSettings, max_buffered_frames: int) -> EncoderProcess:
        """Spawn an encoder and hand it ``settings`` (on stdin: the stream key stays out of
        the process list). Its own session: a terminal's Ctrl-C goes to the server alone."""
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            CHILD_MODULE,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,  # FFmpeg's messages may name the URL
            start_new_session=True,
            limit=MAX_REPORT_BYTES,
        )
        assert process.stdin is not None
        process.stdin.write(settings.to_json().encode() + b"\n")
        return cls(process, max_buffered_frames)

    @property
    def pid(self) -> int:
        return self._process.pid

    def send(self, frame: VideoFrame) -> bool:
        """Queue ``frame`` for the encoder; False (dropped) while it is behind or gone."""
        stdin = self._process.stdin
        if self._input_closed or stdin is None or stdin.is_closing():
            return False
        data = pack_frame(frame)
        if stdin.transport.get_write_buffer_size() + len(data) > self._max_buffered * len(data):
            return False  # ``max_buffered_frames`` behind: this one is dropped
        try:
            stdin.write(data)
        except (BrokenPipeError, ConnectionResetError):
            return False
        return True

    async def reports(self) -> AsyncIterator[Report]:
        """Its reports, until it closes stdout (it exited)."""
        stdout = self._process.stdout
        assert stdout is not None
        while True:
            try:
                line = await stdout.readline()
            except ValueError:  # a line over the limit: not ours
                yield Report(event="error", message="the encoder wrote something unreadable")
                continue
            if not line:
                return
            yield Report.parse(line)

    def close_input(self) -> None:
        """No more frames: the encoder flushes, writes the trailer and exits."""
        self._input_closed = True
        stdin = self._process.stdin
        if stdin is not None and not stdin.is_closing():
            stdin.close()

    async def finish(self, timeout_s: float) -> int:
        """Close its input and wait for it to exit (killed after ``timeout_s``); its code."""
        self.close_input()
        try:
            return await asyncio.wait_for(self._process.wait(), timeout_s)
        except TimeoutError:
            log.warning("encoder %d did not finish within %.1f s; killing it", self.pid, timeout_s)
            return await self.kill()

    async def kill(self) -> int:
        self._input_closed = True
        if self._process.returncode is None:
            try:
                self._process.kill()
            except ProcessLookupError:
                pass
        code = await self._process.wait()
        stdin = self._process.stdin
        if stdin is not None and not stdin.is_closing():
            stdin.close()
        return code

    async def wait(self) -> int:
        return await self._process.wait()
