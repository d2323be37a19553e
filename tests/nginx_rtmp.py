"""A real RTMP ingest for the broadcast tests: Debian nginx + libnginx-mod-rtmp on loopback.

``NginxRtmp`` writes its own nginx.conf into a temporary prefix (own port, pid file and logs
there, ``daemon off``), starts nginx in the foreground, and stops it. Every stream published
to ``rtmp://127.0.0.1:<port>/live/<name>`` is also recorded by nginx as
``<prefix>/rec/<name>-<unique>.flv``: what nginx received, read back after the push.
Installed by ``scripts/install-media-servers.sh``.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

NGINX = "/usr/sbin/nginx"
RTMP_MODULE = Path("/usr/lib/nginx/modules/ngx_rtmp_module.so")
START_TIMEOUT_S = 10.0

CONF = """
load_module {module};
daemon off;
master_process off;  # one process, as the user running the test (it writes the recordings)
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
events {{ worker_connections 64; }}
rtmp {{
  server {{
    listen 127.0.0.1:{port};
    chunk_size 4096;
    application live {{
      live on;
      wait_key on;
      record all;
      record_path {prefix}/rec;
      record_unique on;
    }}
  }}
}}
"""


def available() -> bool:
    return Path(NGINX).is_file() and RTMP_MODULE.is_file() and shutil.which("ffprobe") is not None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class NginxRtmp:
    def __init__(self, prefix: Path, port: int | None = None) -> None:
        self.prefix = prefix
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        (prefix / "rec").mkdir(parents=True, exist_ok=True)
        self.conf = prefix / "nginx.conf"
        self.conf.write_text(CONF.format(module=RTMP_MODULE, prefix=prefix, port=self.port))

    def url(self, name: str) -> str:
        return f"rtmp://127.0.0.1:{self.port}/live/{name}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                NGINX,
                "-p",
                str(self.prefix),
                "-c",
                str(self.conf),
                "-e",
                str(self.prefix / "error.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nginx exited: {(self.prefix / 'error.log').read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)  # polling a port that is not open yet
        raise RuntimeError("nginx did not open its port in time")

    def stop(self) -> None:
        """Fast shutdown (SIGTERM): live connections are cut, as when a server goes down."""
        process, self.process = self.process, None
        if process is None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def recordings(self) -> list[Path]:
        return sorted((self.prefix / "rec").glob("*.flv"), key=lambda p: p.stat().st_mtime)
