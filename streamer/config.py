"""The one configuration tree.

Every tunable lives in exactly one frozen dataclass field with its default. Method parameters
(pose, silence, articulator, blinks, renderer) are defined next to the code that uses them in
``msadtalker`` and composed here; the pipeline, render and server sections are ours. A TOML
file mirrors the tree (``[pose]``, ``[silence]``, ...); CLI flags override single dotted keys.
Unknown keys and wrongly typed values are errors that name the key.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from msadtalker.blink import BlinkConfig
from msadtalker.errors import ConfigError
from msadtalker.idle import IdleConfig
from msadtalker.pose import CosinePoseConfig
from msadtalker.silence import SilenceConfig
from streamer.server.ids import INSTANCE_ID

# Secrets from the environment (``AuthConfig``): token lists comma-separated.
PUBLISHER_TOKENS_ENV = "MSADTALKER_PUBLISHER_TOKENS"
VIEWER_TOKENS_ENV = "MSADTALKER_VIEWER_TOKENS"
TOKEN_SECRET_ENV = "MSADTALKER_TOKEN_SECRET"
TURN_SECRET_ENV = "MSADTALKER_TURN_SECRET"  # ``IceConfig.turn_secret``
MIN_TOKEN_CHARS = 16  # shorter static tokens and secrets are guessable
_ORIGIN = re.compile(
    r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?|https?://\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?"
)


@dataclass(frozen=True)
class PipelineConfig:
    """How far the streaming pipeline may look ahead, and the seed of everything random."""

    # Lookahead granted to stages that can use it (silence window, neural mapping window),
    # offline (render, motion, the offline benches). 80 ms = 2 frames reproduces the paper's
    # centred W = 5 window exactly. Live sessions never read it: ``server.lookahead_ms``.
    lookahead_ms: int = 80
    seed: int = 0

    def validate(self) -> None:
        if self.lookahead_ms < 0:
            raise ValueError("lookahead_ms must be >= 0")
        if self.seed < 0:
            raise ValueError("seed must be >= 0")


@dataclass(frozen=True)
class RenderConfig:
    renderer: Literal["auto", "mesh", "neural"] = "auto"
    size: Literal[256, 512] = 256
    mode: Literal["crop", "full"] = "crop"
    still: bool = False
    # Neural renderer only: inference backend (``engines.registry``) and device.
    engine: Literal["torch", "onnxruntime", "tensorrt", "triton"] = "torch"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    engine_url: str = ""  # triton: the server's gRPC address, e.g. "triton:8001"
    # Cross-session batching of the per-frame networks (engines.batching): up to batch_max
    # rows per engine call, a call waits at most batch_wait_ms for company. 1 = off.
    batch_max: int = 1
    batch_wait_ms: float = 4.0
    # torch on CUDA only (engines.fast_path): fp32 | fp16 | bf16 with fp32 islands,
    # channels-last, CUDA graphs. Ignored on CPU.
    precision: Literal["fp32", "fp16", "bf16"] = "fp32"
    cuda_graphs: bool = False

    def validate(self) -> None:
        if not 1 <= self.batch_max <= 64:
            raise ValueError(f"batch_max must be 1 .. 64, got {self.batch_max}")
        if not 0 <= self.batch_wait_ms <= 40:
            raise ValueError(f"batch_wait_ms must be 0 .. 40, got {self.batch_wait_ms}")
        if self.engine == "triton" and not self.engine_url:
            raise ValueError("engine 'triton' needs engine_url (the server's gRPC host:port)")


@dataclass(frozen=True)
class ServerConfig:
    """The live server and its sessions (``streamer.server``, ``streamer.session``)."""

    host: str = "127.0.0.1"
    port: int = 8080
    # Lookahead of live sessions (serve, kiosk, the live benches), passed to the stage
    # builder explicitly; ``pipeline.lookahead_ms`` is the offline one and does not apply.
    # 0 makes the silence window fully causal: mouth-visible latency p95 ~140 ms on the mesh
    # path instead of ~220 ms with the paper's centred window (80 ms), see docs/live.md.
    lookahead_ms: int = 0
    # Capacity, each worker's with ``--workers``: an offer beyond it gets 503 + Retry-After.
    # Peer connections in all (publishers, viewers, offers being negotiated).
    max_sessions: int = 16
    max_rooms: int = 16  # rooms = publisher pipelines, the expensive part (a renderer each)
    max_viewers_per_room: int = 64
    max_viewers: int = 64  # in all rooms; below max_sessions it keeps slots for publishers
    max_sdp_bytes: int = 64_000
    # Ingest jitter allowance: a video frame is made as soon as its audio is in, and at the
    # latest this long after that audio was due; mic packets later than that are replaced by
    # silence. Costs latency only while packets are late.
    jitter_ms: int = 60
    # Frames each subscriber (video track, audio track, viewer) may hold; when full the
    # oldest frame is dropped and counted.
    queue_frames: int = 4
    # Drop threshold: when the pipeline is more than this many frames behind real time, frames
    # are not rendered (motion still advances, the last image is repeated) until it catches up.
    behind_frames: int = 2
    # ICE host candidates on 127.0.0.1, which aioice does not gather by itself: "only" offers
    # loopback alone (hermetic), "add" adds it to the interfaces' addresses, "off" leaves
    # aioice alone, "auto" = "only" when ``host`` is a loopback address, else "off".
    ice_loopback: Literal["auto", "only", "add", "off"] = "auto"
    stun_url: str = ""  # e.g. "stun:stun.l.google.com:19302"; empty = host candidates only
    # A peer that has not connected this long after its answer is closed. The answer carries
    # every candidate (aiortc does not trickle), so only the connectivity checks remain: a
    # round trip or two direct, a few seconds through a TURN relay or a lossy path.
    connect_timeout_s: float = 10.0
    # A connected peer that sends no RTCP for this long has vanished (ICE consent alone takes
    # 30 s to notice); browsers and aiortc send receiver reports about every second.
    peer_timeout_s: float = 8.0
    # Offers not connected yet (being negotiated, or answered and waiting for ICE) each hold a
    # session slot: per client address (429 beyond) and in all (503 beyond), so that a client
    # sending offers it never connects cannot hold every slot (docs/live.md, "Limits").
    max_pending_per_client: int = 4
    max_pending: int = 8
    # Offers per client address: a burst of ``offers_burst``, then ``offers_per_minute``
    # (token bucket, ``streamer.server.ratelimit``); beyond: 429 + Retry-After.
    offers_per_minute: float = 60.0
    offers_burst: int = 20
    # A remote publisher whose mic has sent nothing (not even silence) while its room had no
    # viewer for this long is closed; 0 = never. A live but silent mic keeps its session.
    idle_session_s: float = 300.0
    # Every remote peer connection is closed after this long; 0 = no limit (virtual anchors
    # stream for hours: set it where sessions should not).
    max_session_s: float = 0.0
    # Reverse proxies (addresses or networks, "10.0.0.0/8") whose X-Forwarded-For names the
    # client; otherwise the TCP peer is the client of the per-client limits.
    trusted_proxies: tuple[str, ...] = ()
    # Slow clients on the public port (``streamer.server.connections``): the request line and
    # headers must be in ``header_timeout_s`` after the connection opens or the request's
    # first byte, a body ``body_timeout_s`` after its headers; an idle keep-alive connection
    # is closed after ``keepalive_timeout_s``. Connections at once per client address / all.
    header_timeout_s: float = 10.0
    body_timeout_s: float = 10.0
    keepalive_timeout_s: float = 15.0
    max_connections_per_client: int = 32
    max_connections: int = 1024
    # SIGTERM: how long live sessions get to finish (the avatar stops speaking or the peer
    # hangs up) before their pipelines are flushed into the recordings and their peer
    # connections closed (docs/live.md, "Lifecycle").
    drain_s: float = 5.0
    record_dir: str = ""  # when set, every publisher session's motion trace is written here
    # Server processes sharing the port (``msadtalker serve --workers``, docs/live.md): 1 = one
    # process, as always; N > 1 = a supervising parent and N workers, limits per worker.
    workers: int = 1
    # This server among several behind a load balancer (docs/broadcast.md, "Several
    # machines"): every session, room and resource id starts with it (``streamer.server.ids``)
    # so the balancer routes follow-ups to it. 1-32 of a-z 0-9 -; empty = from the hostname
    # (random when it gives nothing). Distinct per machine.
    instance_id: str = ""
    # Serve without tokens on an address other than loopback (``--insecure``): anyone who can
    # reach the port may publish. Off: such a server refuses to start (``streamer.server.run``).
    insecure: bool = False
    # Origins (``https://app.example``) whose pages may call the API from the browser (CORS);
    # empty = same-origin only. Exact matches: no wildcards, so no origin is allowed by accident.
    cors_origins: tuple[str, ...] = ()
    # CSP ``frame-ancestors`` of the pages: who may embed them (an app, an OBS dock); "'self'"
    # = this server only, "'none'" = nobody. Sources as CSP writes them.
    frame_ancestors: tuple[str, ...] = ("'self'",)

    def validate(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError("port must be in 0..65535")
        if self.workers < 1:
            raise ValueError("workers must be >= 1")
        if self.instance_id and not INSTANCE_ID.fullmatch(self.instance_id):
            raise ValueError(f"instance_id {self.instance_id!r} must be 1-32 of a-z 0-9 -")
        if min(self.max_sessions, self.max_viewers_per_room, self.queue_frames) < 1:
            raise ValueError("session, viewer and queue limits must be >= 1")
        if self.max_sdp_bytes < 256:
            raise ValueError("max_sdp_bytes must be >= 256")
        if self.lookahead_ms < 0:
            raise ValueError("lookahead_ms must be >= 0")
        if self.jitter_ms < 0 or self.behind_frames < 0:
            raise ValueError("jitter_ms and behind_frames must be >= 0")
        if min(self.connect_timeout_s, self.peer_timeout_s) <= 0 or self.drain_s < 0:
            raise ValueError("connect/peer timeouts must be > 0 and drain_s >= 0")
        self._validate_limits()
        for origin in self.cors_origins:
            if not _ORIGIN.fullmatch(origin):
                raise ValueError(
                    f"cors_origins: {origin!r} is not an origin like https://host[:port]"
                )
        if not self.frame_ancestors:
            raise ValueError("frame_ancestors must name at least one source (\"'none'\": nobody)")
        for source in self.frame_ancestors:
            # One CSP source each: what would end the directive or the header is refused.
            if not source or any(c in source for c in ";,\r\n\t ") or not source.isprintable():
                raise ValueError(f"frame_ancestors: {source!r} is not one CSP source")

    def _validate_limits(self) -> None:
        """The limits on clients (``streamer.server.limits``, ``connections``)."""
        counts = (
            self.max_rooms,
            self.max_viewers,
            self.max_pending,
            self.max_pending_per_client,
            self.offers_burst,
            self.max_connections,
            self.max_connections_per_client,
        )
        if min(counts) < 1:
            raise ValueError("room, viewer, pending, burst and connection limits must be >= 1")
        if self.offers_per_minute <= 0:
            raise ValueError("offers_per_minute must be > 0")
        if min(self.header_timeout_s, self.body_timeout_s, self.keepalive_timeout_s) <= 0:
            raise ValueError("header, body and keep-alive timeouts must be > 0")
        if self.idle_session_s < 0 or self.max_session_s < 0:
            raise ValueError("idle_session_s and max_session_s must be >= 0 (0: no limit)")
        for proxy in self.trusted_proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ValueError(f"trusted_proxies: {proxy!r} is no address or network") from None


@dataclass(frozen=True)
class AuthConfig:
    """Who may publish and who may watch (``streamer.server.auth``). No tokens and no secret:
    the server is open, which ``serve`` allows on a loopback address only.

    The environment adds to the file: ``MSADTALKER_PUBLISHER_TOKENS`` and
    ``MSADTALKER_VIEWER_TOKENS`` (comma-separated) join the file's lists, and
    ``MSADTALKER_TOKEN_SECRET`` replaces the file's secret when set (``load_config``), so
    secrets can stay out of files. ``repr`` shows how many there are, never what they are."""

    publisher_tokens: tuple[str, ...] = ()
    viewer_tokens: tuple[str, ...] = ()
    # HMAC key of the signed room tokens (``msadtalker token``): one role, one room, expiry.
    token_secret: str = ""
    # With a secret, a publisher's answer carries a viewer link with a viewer token for its
    # room valid this long, so the link lets people watch that room and nothing else; 0 = a
    # bare link (viewers bring their own token).
    viewer_link_ttl_s: float = 4 * 3600.0

    def __repr__(self) -> str:
        secret = "<set>" if self.token_secret else "<unset>"
        return (
            f"AuthConfig(publisher_tokens=<{len(self.publisher_tokens)} hidden>, "
            f"viewer_tokens=<{len(self.viewer_tokens)} hidden>, token_secret={secret}, "
            f"viewer_link_ttl_s={self.viewer_link_ttl_s!r})"
        )

    @property
    def open(self) -> bool:
        """Nothing configured: every request may publish."""
        return not (self.publisher_tokens or self.viewer_tokens or self.token_secret)

    def validate(self) -> None:
        for name in ("publisher_tokens", "viewer_tokens"):
            for token in getattr(self, name):
                # Named by position, never by value: the message may end up in a log.
                if len(token) < MIN_TOKEN_CHARS or not token.isprintable() or " " in token:
                    raise ValueError(
                        f"{name}: every token must be >= {MIN_TOKEN_CHARS} printable characters "
                        "without spaces"
                    )
        if self.token_secret and len(self.token_secret) < MIN_TOKEN_CHARS:
            raise ValueError(f"token_secret must be >= {MIN_TOKEN_CHARS} characters")
        if set(self.publisher_tokens) & set(self.viewer_tokens):
            raise ValueError("a token cannot be both a publisher and a viewer token")
        if self.viewer_link_ttl_s < 0:
            raise ValueError("viewer_link_ttl_s must be >= 0")


_STUN_URL = re.compile(r"stuns?:[^\s?#]+")
_TURN_URL = re.compile(r"turns?:[^\s?#]+(\?transport=(udp|tcp))?")


@dataclass(frozen=True)
class IceConfig:
    """ICE servers (``streamer.server.ice``), configured once: the server's own peer
    connections use them, and the pages (``GET /ice-servers``) and WHIP/WHEP clients (``Link``
    headers) are handed them. TURN credentials are static (``turn_username`` +
    ``turn_credential``) or, with ``turn_secret``, minted per request as coturn's
    ``use-auth-secret`` checks them: username ``"<expiry>:<turn_user>"``, credential
    base64(HMAC-SHA1(secret, username)), valid ``turn_ttl_s``. ``MSADTALKER_TURN_SECRET``
    replaces the file's secret when set. ``server.stun_url`` (older configs) joins
    ``stun_urls``."""

    stun_urls: tuple[str, ...] = ()  # "stun:stun.example.net:3478"
    turn_urls: tuple[str, ...] = ()  # "turn:turn.example.net:3478?transport=udp", "turns:..."
    turn_username: str = ""
    turn_credential: str = ""
    turn_secret: str = ""  # TURN REST shared secret (coturn ``static-auth-secret``)
    turn_user: str = "msadtalker"  # the user part of a minted username
    turn_ttl_s: float = 6 * 3600.0  # a minted credential's lifetime (a session can outlast it)

    def __repr__(self) -> str:
        credential = "<set>" if self.turn_credential else "<unset>"
        secret = "<set>" if self.turn_secret else "<unset>"
        return (
            f"IceConfig(stun_urls={self.stun_urls!r}, turn_urls={self.turn_urls!r}, "
            f"turn_username={self.turn_username!r}, turn_credential={credential}, "
            f"turn_secret={secret}, turn_user={self.turn_user!r}, "
            f"turn_ttl_s={self.turn_ttl_s!r})"
        )

    def validate(self) -> None:
        for url in self.stun_urls:
            if not _STUN_URL.fullmatch(url):
                raise ValueError(f"stun_urls: {url!r} is not a stun:host[:port] URL")
        for url in self.turn_urls:
            if not _TURN_URL.fullmatch(url):
                raise ValueError(
                    f"turn_urls: {url!r} is not a turn(s):host[:port][?transport=udp|tcp] URL"
                )
        static = bool(self.turn_username or self.turn_credential)
        if static and not (self.turn_username and self.turn_credential):
            raise ValueError("turn_username and turn_credential go together")
        if static and self.turn_secret:
            raise ValueError("set either turn_secret (TURN REST) or a static TURN username")
        if self.turn_urls and not (static or self.turn_secret):
            raise ValueError("turn_urls need turn_secret or turn_username + turn_credential")
        if (static or self.turn_secret) and not self.turn_urls:
            raise ValueError("TURN credentials are set but turn_urls is empty")
        if self.turn_secret and len(self.turn_secret) < MIN_TOKEN_CHARS:
            raise ValueError(f"turn_secret must be >= {MIN_TOKEN_CHARS} characters")
        if not self.turn_user or ":" in self.turn_user or not self.turn_user.isprintable():
            raise ValueError("turn_user must be printable, non-empty and without ':'")
        if self.turn_ttl_s <= 0:
            raise ValueError("turn_ttl_s must be > 0")


@dataclass(frozen=True)
class BroadcastConfig:
    """A room's encoded outputs (``streamer.broadcast``): RTMP pushes and mp4 recordings.

    ``rtmp_urls``: pushed for every room from its start, ``{room}`` replaced by the room id
    (``rtmp://live.example/app/{room}``); ``record``: every room is recorded into
    ``record_dir``. More outputs per room through ``POST /rooms/{room}/outputs``. Stream keys
    are secrets: ``repr`` shows how many URLs there are, never what they are."""

    rtmp_urls: tuple[str, ...] = ()
    record: bool = False
    record_dir: str = "recordings"
    max_outputs_per_room: int = 4
    # What platforms ask for: H.264 at a constant-ish bitrate, a keyframe every 2 s, AAC.
    video_kbps: int = 2500
    audio_kbps: int = 128
    audio_rate: Literal[44100, 48000] = 48000
    keyframe_s: float = 2.0
    preset: Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium"] = "veryfast"
    encoder_threads: int = 2
    # Frames waiting for an output (drop-oldest beyond, counted).
    queue_frames: int = 50
    # A far end that has not accepted the stream within connect_timeout_s, or that took
    # nothing for stall_timeout_s, is dropped and tried again after a jittered back-off
    # doubling from reconnect_min_s to reconnect_max_s, at most reconnect_attempts times in a
    # row (a connection that lived reconnect_reset_s starts the count again).
    connect_timeout_s: float = 5.0
    stall_timeout_s: float = 5.0
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 30.0
    reconnect_attempts: int = 20
    reconnect_reset_s: float = 10.0
    # Stop, room end and drain: how long an encoder gets to flush and write its trailer.
    finish_timeout_s: float = 10.0

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{f.name}=<{len(self.rtmp_urls)} hidden>"
            if f.name == "rtmp_urls"
            else f"{f.name}={getattr(self, f.name)!r}"
            for f in dataclasses.fields(self)
        )
        return f"BroadcastConfig({fields})"

    def validate(self) -> None:
        from streamer.broadcast.targets import OutputTargetError, check_rtmp_url, fill_template

        for position, template in enumerate(self.rtmp_urls):
            try:
                check_rtmp_url(fill_template(template, "room"))
            except OutputTargetError as exc:
                raise ValueError(f"rtmp_urls[{position}]: {exc}") from None
        positive = (
            "video_kbps",
            "audio_kbps",
            "keyframe_s",
            "encoder_threads",
            "queue_frames",
            "connect_timeout_s",
            "stall_timeout_s",
            "reconnect_min_s",
            "reconnect_attempts",
            "finish_timeout_s",
            "max_outputs_per_room",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must be >= reconnect_min_s")
        if self.reconnect_reset_s < 0:
            raise ValueError("reconnect_reset_s must be >= 0")
        if len(self.rtmp_urls) + int(self.record) > self.max_outputs_per_room:
            raise ValueError("more default outputs than max_outputs_per_room")
        if not self.record_dir:
            raise ValueError("record_dir must name a directory")


@dataclass(frozen=True)
class Config:
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    pose: CosinePoseConfig = field(default_factory=CosinePoseConfig)
    silence: SilenceConfig = field(default_factory=SilenceConfig)
    blink: BlinkConfig = field(default_factory=BlinkConfig)
    idle: IdleConfig = field(default_factory=IdleConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    broadcast: BroadcastConfig = field(default_factory=BroadcastConfig)
    ice: IceConfig = field(default_factory=IceConfig)


def load_config(
    path: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Defaults, then the TOML file (if any), then dotted-key overrides (``{"pose.seed": 3}``),
    then the secrets in ``environ`` (default ``os.environ``; see ``AuthConfig``)."""
    config = Config()
    if path is not None:
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
        config = _merge(config, raw, prefix="")
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        config = _set(config, key.split("."), value, prefix="")
    environ = os.environ if environ is None else environ
    config = dataclasses.replace(config, auth=_auth_from_environment(config.auth, environ))
    turn_secret = environ.get(TURN_SECRET_ENV, "").strip()
    if turn_secret:
        config = dataclasses.replace(
            config, ice=dataclasses.replace(config.ice, turn_secret=turn_secret)
        )
    _validate(config)
    return config


def _auth_from_environment(auth: AuthConfig, environ: Mapping[str, str]) -> AuthConfig:
    """The file's tokens plus the environment's; the environment's secret when it sets one."""

    def listed(name: str) -> tuple[str, ...]:
        return tuple(t.strip() for t in environ.get(name, "").split(",") if t.strip())

    publishers = auth.publisher_tokens + listed(PUBLISHER_TOKENS_ENV)
    viewers = auth.viewer_tokens + listed(VIEWER_TOKENS_ENV)
    return dataclasses.replace(
        auth,
        publisher_tokens=tuple(dict.fromkeys(publishers)),
        viewer_tokens=tuple(dict.fromkeys(viewers)),
        token_secret=environ.get(TOKEN_SECRET_ENV, "").strip() or auth.token_secret,
    )


def file_sets(path: str | Path, key: str) -> bool:
    """Whether the TOML config file at ``path`` (one ``load_config`` has read) sets the dotted
    ``key``; for notices about keys that do not apply to a command."""
    node: Any = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _validate(config: Config) -> None:
    for section in dataclasses.fields(config):
        node = getattr(config, section.name)
        check = getattr(node, "validate", None)
        if check is None:
            continue
        try:
            check()
        except ValueError as exc:
            raise ConfigError(f"[{section.name}] {exc}") from None


# Keys that were renamed: one name per key, so the old one is an error that says the new one.
_RENAMED = {"server.drain_timeout_s": "server.drain_s"}


def _unknown_key(dotted: str) -> str:
    renamed = _RENAMED.get(dotted)
    if renamed is not None:
        return f"config key '{dotted}' is now '{renamed}' (same meaning): rename it"
    return f"unknown config key '{dotted}'"


def _merge(node: Any, raw: dict[str, Any], prefix: str) -> Any:
    changes: dict[str, Any] = {}
    hints = typing.get_type_hints(type(node))
    names = {f.name for f in dataclasses.fields(node)}
    for key, value in raw.items():
        dotted = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(_unknown_key(dotted))
        current = getattr(node, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"config key '{dotted}' must be a table")
            changes[key] = _merge(current, value, prefix=f"{dotted}.")
        else:
            changes[key] = _coerce(value, hints[key], dotted)
    return dataclasses.replace(node, **changes)


def _set(node: Any, path: list[str], value: Any, prefix: str) -> Any:
    head, rest = path[0], path[1:]
    dotted = f"{prefix}{head}"
    is_section = dataclasses.is_dataclass(node) and not isinstance(node, type)
    if not is_section or head not in {f.name for f in dataclasses.fields(node)}:
        raise ConfigError(_unknown_key(dotted))
    if rest:
        return dataclasses.replace(
            node, **{head: _set(getattr(node, head), rest, value, f"{dotted}.")}
        )
    hint = typing.get_type_hints(type(node))[head]
    return dataclasses.replace(node, **{head: _coerce(value, hint, dotted)})


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check ``value`` against the field's annotation; ints may stand for floats."""
    origin = typing.get_origin(hint)
    if origin is Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            choices = ", ".join(repr(a) for a in allowed)
            raise ConfigError(f"config key '{key}' must be one of {choices}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            if option is type(None) and value is None:
                return None
            try:
                return _coerce(value, option, key)
            except ConfigError:
                continue
        raise ConfigError(f"config key '{key}' has an unusable value {value!r}")
    if origin is tuple and len(typing.get_args(hint)) == 2 and typing.get_args(hint)[1] is ...:
        # ``tuple[str, ...]``: a TOML list of any length (frozen, so the config stays hashable).
        if not isinstance(value, list | tuple):
            raise ConfigError(f"config key '{key}' must be a list")
        return tuple(_coerce(v, typing.get_args(hint)[0], key) for v in value)
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, list | tuple) or len(value) != len(args):
            raise ConfigError(f"config key '{key}' must be a list of {len(args)} values")
        return tuple(_coerce(v, a, key) for v, a in zip(value, args, strict=True))
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"config key '{key}' must be a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{key}' must be an integer, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{key}' must be true or false, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key '{key}' must be a string, got {value!r}")
        return value
    return value
