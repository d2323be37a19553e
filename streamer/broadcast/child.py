"""The encoder process: ``python -m streamer.broadcast.child`` (one per output).

Reads the settings and the frames from stdin (``streamer.broadcast.wire``), encodes them
(``FrameEncoder``) and reports on stdout. It ends when stdin ends (the server closed it, or
the server is gone): it then flushes and writes the trailer, so a recording is complete
whatever happened to the server. SIGINT and SIGTERM are ignored for that reason: the server
decides when the input ends, and a terminal's Ctrl-C reaches the server, not this process.

A separate process, not a thread: the encoder never competes with the live path for the
interpreter lock, and a far end that hangs (FFmpeg's RTMP client has no timeout PyAV can set
on an output) is ended by killing the process (``streamer.broadcast.process``).
"""

from __future__ import annotations

import signal
import sys
import time
from typing import BinaryIO

from streamer.broadcast.encoder import EncoderSettings, FrameEncoder
from streamer.broadcast.targets import scrub
from streamer.broadcast.wire import Report, read_frame

PROGRESS_EVERY = 25  # frames between progress reports (one a second at 25 fps)


def run(stdin: BinaryIO, stdout: BinaryIO) -> int:
    def report(item: Report) -> None:
        stdout.write(item.line())
        stdout.flush()

    report(Report("ready"))  # started: from here on, the far end's time is counted
    settings = EncoderSettings.from_json(stdin.readline().decode())
    encoder = FrameEncoder(settings)
    spent = 0.0
    try:
        while (frame := read_frame(stdin)) is not None:
            started = time.perf_counter()
            opened = encoder.opened
            encoder.write(frame.index, frame.image, frame.audio)
            spent += time.perf_counter() - started
            if not opened:
                report(Report("open", encoder.frames))
            if encoder.frames % PROGRESS_EVERY == 0:
                report(Report("progress", encoder.frames, 1000.0 * spent / encoder.frames))
        encoder.close()
    except Exception as exc:
        encoder.abort()
        message = scrub(str(exc), settings.target)
        report(Report("error", encoder.frames, message=message or type(exc).__name__))
        return 1
    mean_ms = 1000.0 * spent / encoder.frames if encoder.frames else 0.0
    report(Report("closed", encoder.frames, mean_ms))
    return 0


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    return run(sys.stdin.buffer, sys.stdout.buffer)


if __name__ == "__main__":
    sys.exit(main())
