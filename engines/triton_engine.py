"""triton backend: the networks served by an NVIDIA Triton Inference Server (KServe v2, gRPC).

``--engine triton --engine-url HOST:PORT`` (config ``render.engine`` / ``render.engine_url``):
sessions render through a Triton server on another machine, serving the model repository of
``msadtalker export --format triton`` (``export.triton_repo``). Triton's dynamic batcher
gathers the requests of all sessions (of all server processes) into batches.

Per-avatar state is not sent with every frame: ``generator_source_encoder`` run with
``keep_on_device=True`` (what ``msadtalker.neural.render.NeuralRenderer`` does) returns a
:class:`RemoteSource` handle, no call; ``generator_render`` given that handle calls the
server's ``generator_session`` model with the avatar id and the keypoints only, plus the source
image on the first call of an avatar and again whenever the server answers that it does not
hold the avatar (evicted, restarted). The server keeps the features (export.triton_session).
With numpy features (parity checks, benches) the plain ``generator_render`` model is called.

Opening checks, each failing with one :class:`~engines.base.EngineUnavailable` line naming the
cause: the server is reachable and live within the timeout; every model is ready at the
version of this checkpoint set (``model_version(fingerprint)``; another version on the server
means another checkpoint set or export); its inputs and outputs are the contract's. A call
that takes longer than ``timeout_s`` fails with "did not answer within".
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from engines.base import BaseEngine, BaseEngineSet, EngineUnavailable, first_line
from engines.contracts import contract_for
from msadtalker.errors import CheckpointError
from msadtalker.models.contract import ExportContract
from msadtalker.weights import checkpoint_dir, checkpoint_fingerprint

log = logging.getLogger(__name__)

BACKEND = "triton"
SESSION_MODEL = "generator_session"
UNKNOWN_AVATAR = "UNKNOWN_AVATAR"
DEFAULT_TIMEOUT_S = 30.0
_GENERATOR_VIEWS = ("generator_source_encoder", "generator_render")
_TRITON_DTYPES = {"float32": "FP32", "float16": "FP16", "int64": "INT64"}


def model_version(fingerprint: str) -> int:
    """The Triton model version of a checkpoint set: its fingerprint's first 7 hex digits
    (a positive int64; two sets colliding would need the same 28-bit prefix)."""
    return int(fingerprint[:7], 16) + 1


def import_tritonclient() -> ModuleType:
    try:
        import tritonclient.grpc as grpcclient
    except ImportError:
        raise EngineUnavailable(
            f"{BACKEND}: the Python package tritonclient[grpc] is not installed "
            "(pip install 'msadtalker[triton]')"
        ) from None
    return grpcclient


class TritonCallError(EngineUnavailable):
    """A call to the server failed (unreachable, too slow, refused); one line."""


class AvatarNotOnServer(TritonCallError):
    """``generator_session`` does not hold the avatar's features: send its image again."""


@dataclass(frozen=True)
class RemoteSource:
    """An avatar's generator source features, held by the server under ``avatar_id``.

    ``image`` (1, 3, S, S) stays on the client so the features can be rebuilt on the server."""

    avatar_id: str
    image: np.ndarray = field(repr=False)

    @property
    def shape(self) -> tuple[int, ...]:
        return (1,)


def avatar_id(image: np.ndarray) -> str:
    """Content id of a source image (same image, same id, from any client)."""
    array = np.ascontiguousarray(image, dtype=np.float32)
    digest = hashlib.sha256(array.tobytes())
    digest.update(str(array.shape).encode())
    return digest.hexdigest()[:32]


class _Connection:
    """The client, its URL, timeout and version, and the error translation."""

    def __init__(self, client: Any, grpc: ModuleType, url: str, timeout_s: float, version: str):
        self.client = client
        self.grpc = grpc
        self.url = url
        self.timeout_s = timeout_s
        self.version = version

    def describe(self, model: str, exc: BaseException) -> str:
        text = first_line(exc)
        status = str(getattr(exc, "status", lambda: "")() or "")
        if "DEADLINE_EXCEEDED" in status or "Deadline Exceeded" in text:
            return (
                f"{BACKEND}: {model} on {self.url} did not answer within {self.timeout_s:g} s "
                "(server slow or overloaded)"
            )
        if "UNAVAILABLE" in status or "failed to connect" in text.lower():
            return f"{BACKEND}: server at {self.url} is not reachable ({text})"
        return f"{BACKEND}: {model} on {self.url}: {text}"

    def infer(
        self, model: str, named: Sequence[tuple[str, np.ndarray, str]], outputs: Sequence[str]
    ) -> dict[str, np.ndarray]:
        inputs = []
        for name, array, dtype in named:
            tensor = self.grpc.InferInput(name, list(array.shape), dtype)
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        requested = [self.grpc.InferRequestedOutput(name) for name in outputs]
        try:
            result = self.client.infer(
                model,
                inputs,
                model_version=self.version,
                outputs=requested,
                client_timeout=self.timeout_s,
            )
        except Exception as exc:  # tritonclient's InferenceServerException and gRPC errors
            if UNKNOWN_AVATAR in str(exc):  # the marker may sit deep in a server traceback
                raise AvatarNotOnServer(f"{BACKEND}: {model}: {UNKNOWN_AVATAR}") from None
            raise TritonCallError(self.describe(model, exc)) from None
        return {name: result.as_numpy(name) for name in outputs}


class TritonEngine(BaseEngine):
    """One network served by Triton (module docstring)."""

    BACKEND = BACKEND

    def __init__(
        self, network: str, contract: ExportContract, connection: _Connection, known: _KnownAvatars
    ) -> None:
        super().__init__(network, contract)
        self._connection = connection
        self._known = known

    def run(self, *inputs: Any, keep_on_device: bool = False) -> dict[str, Any]:
        self._check_count(inputs)
        if self._network == "generator_source_encoder" and keep_on_device:
            image = np.ascontiguousarray(inputs[0], dtype=np.float32)
            handle = RemoteSource(avatar_id(image[:1]), image[:1])
            return {"source_volume": handle, "source_compressed": handle}
        if self._network == "generator_render" and isinstance(inputs[0], RemoteSource):
            return self._render_remote(inputs[0], inputs[2], inputs[3])
        named = [
            (spec.name, _array(value, spec.dtype), _TRITON_DTYPES[spec.dtype])
            for value, spec in zip(inputs, self._contract.inputs, strict=True)
        ]
        return self._connection.infer(self._network, named, self._contract.output_names)

    def _render_remote(
        self, source: RemoteSource, kp_source: Any, kp_driving: Any
    ) -> dict[str, Any]:
        kp_driving = _array(kp_driving, "float32")
        rows = kp_driving.shape[0]
        kp_source = np.broadcast_to(_array(kp_source, "float32"), kp_driving.shape).copy()
        ids = np.array([[source.avatar_id.encode()]] * rows, dtype=np.object_)
        for attempt in range(2):
            named = [
                ("avatar_id", ids, "BYTES"),
                ("kp_source", kp_source, "FP32"),
                ("kp_driving", kp_driving, "FP32"),
            ]
            send_image = attempt > 0 or not self._known.has(source.avatar_id)
            if send_image:
                image = np.repeat(source.image, rows, axis=0)
                named.append(("source_image", image, "FP32"))
            try:
                out = self._connection.infer(SESSION_MODEL, named, ["prediction"])
            except AvatarNotOnServer:
                if not send_image:
                    self._known.forget(source.avatar_id)
                    log.info(
                        "%s: server lost avatar %s; sending its image again",
                        BACKEND,
                        source.avatar_id[:8],
                    )
                    continue
                raise
            self._known.add(source.avatar_id)
            return out
        raise TritonCallError(
            f"{BACKEND}: {SESSION_MODEL} keeps refusing avatar {source.avatar_id}"
        )


def _array(value: Any, dtype: str) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.ascontiguousarray(value, dtype=np.dtype(dtype))


class _KnownAvatars:
    """Avatar ids this client has sent to the server (bounded: forgetting only costs a resend)."""

    def __init__(self, capacity: int = 256) -> None:
        self._ids: dict[str, None] = {}
        self._capacity = capacity
        self._lock = threading.Lock()

    def has(self, avatar: str) -> bool:
        with self._lock:
            return avatar in self._ids

    def add(self, avatar: str) -> None:
        with self._lock:
            self._ids[avatar] = None
            while len(self._ids) > self._capacity:
                self._ids.pop(next(iter(self._ids)))

    def forget(self, avatar: str) -> None:
        with self._lock:
            self._ids.pop(avatar, None)


class TritonEngineSet(BaseEngineSet[TritonEngine]):
    """The networks of one checkpoint set served by one Triton server (module docstring)."""

    BACKEND = BACKEND

    def __init__(
        self,
        checkpoints: str | Path | None,
        size: int,
        networks: Iterable[str],
        device: str = "auto",
        url: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        version: str | None = None,
    ) -> None:
        """``version``: the model version to ask for; default ``model_version`` of the local
        checkpoint set, or the server's latest when there is none here."""
        super().__init__(networks, size)
        if not url:
            raise EngineUnavailable(f"{BACKEND}: no server URL (--engine-url HOST:PORT)")
        grpc = import_tritonclient()
        if version is None:
            version = self._version(checkpoints, size)
        try:
            client = grpc.InferenceServerClient(url=url)
        except Exception as exc:  # a malformed URL
            raise EngineUnavailable(
                f"{BACKEND}: bad server URL {url!r} ({first_line(exc)})"
            ) from None
        self._connection = _Connection(client, grpc, url, timeout_s, version)
        self._known = _KnownAvatars()
        self._contracts = {name: contract_for(name, size) for name in self.networks}
        self._check_server()
        for model in self._models():
            self._check_model(model)

    @property
    def device(self) -> str:
        return f"triton:{self._connection.url}"

    @staticmethod
    def _version(checkpoints: str | Path | None, size: int) -> str:
        try:
            fingerprint = checkpoint_fingerprint(checkpoint_dir(checkpoints), size)
        except CheckpointError as exc:
            log.warning(
                "%s: no local checkpoints (%s): using the server's latest models", BACKEND, exc
            )
            return ""
        return str(model_version(fingerprint))

    def _models(self) -> list[str]:
        models = [name for name in self.networks if name not in _GENERATOR_VIEWS]
        if any(name in _GENERATOR_VIEWS for name in self.networks):
            models.append(SESSION_MODEL)
        return models

    def _check_server(self) -> None:
        connection = self._connection
        try:
            live = connection.client.is_server_live(client_timeout=connection.timeout_s)
        except Exception as exc:
            raise EngineUnavailable(connection.describe("server", exc)) from None
        if not live:
            raise EngineUnavailable(f"{BACKEND}: server at {connection.url} is not live")

    def _check_model(self, model: str) -> None:
        connection = self._connection
        client = connection.client
        try:
            ready = client.is_model_ready(
                model, connection.version, client_timeout=connection.timeout_s
            )
            if not ready:
                served = self._served_versions(model)
                wanted = connection.version or "latest"
                raise EngineUnavailable(
                    f"{BACKEND}: {connection.url} has no ready {model} version {wanted} "
                    f"(serves: {served or 'none'}); another checkpoint set or export? "
                    "re-export with msadtalker export --format triton"
                )
            metadata = client.get_model_metadata(
                model, connection.version, as_json=True, client_timeout=connection.timeout_s
            )
        except EngineUnavailable:
            raise
        except Exception as exc:
            raise EngineUnavailable(connection.describe(model, exc)) from None
        if model == SESSION_MODEL:
            return
        contract = self._contracts[model]
        names = (
            [t["name"] for t in metadata.get("inputs", [])],
            [t["name"] for t in metadata.get("outputs", [])],
        )
        if sorted(names[0]) != sorted(contract.input_names) or sorted(names[1]) != sorted(
            contract.output_names
        ):
            raise EngineUnavailable(
                f"{BACKEND}: {model} on {connection.url} has inputs {names[0]} and outputs "
                f"{names[1]}, the contract has {contract.input_names} and {contract.output_names}"
            )

    def _served_versions(self, model: str) -> str:
        try:
            metadata = self._connection.client.get_model_metadata(
                model, as_json=True, client_timeout=self._connection.timeout_s
            )
        except Exception:  # the model is not there at all
            return ""
        return ", ".join(metadata.get("versions", []))

    def _open(self, network: str) -> TritonEngine:
        return TritonEngine(network, self._contracts[network], self._connection, self._known)

    def _release(self) -> None:
        try:
            self._connection.client.close()
        except Exception as exc:  # closing a dead channel: nothing left to release
            log.debug("%s: close: %s", BACKEND, exc)


def open_triton_engines(
    checkpoints: str | Path | None,
    size: int,
    networks: Iterable[str],
    device: str = "auto",
    url: str | None = None,
) -> TritonEngineSet:
    """Registry entry point (``engines.registry``)."""
    return TritonEngineSet(checkpoints, size, networks, device, url)
