"""Triton: the model repository, the per-avatar session model, and the ``triton`` engine.

Fast tests: ``config.pbtxt`` from the contracts, ``generator_session``'s avatar table and
batching (export.triton_session, with stand-in networks), the client's errors without a
server. The slow test starts a real Triton (PyTriton's bundled server, tests/triton_server.py)
serving an onnxruntime export of the generator views at 128² and the mapping network, and
checks that frames through Triton equal local onnxruntime frames, that concurrent sessions are
batched (Triton's own statistics), and the errors for another model version and a slow server.
PyTriton needs numpy < 2, so it lives in its own venv (scripts/install-pytriton.sh, which
``.ci/bootstrap.sh test`` runs; or ``$MSADTALKER_PYTRITON_PYTHON``); without it the slow test
is skipped, saying so.
"""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import threading
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
import pytest
from triton_server import READY_MARK

from engines.base import EngineUnavailable
from engines.manifest import NetworkEntry, ParityEntry, TensorEntry, read_manifest
from export.triton_session import AvatarSessions, UnknownAvatar

REPO = Path(__file__).resolve().parents[1]
PYTRITON_ENV = "MSADTALKER_PYTRITON_PYTHON"
PYTRITON_VENV = REPO / ".cache" / "pytriton-venv" / "bin" / "python"


# --- the session model's logic ------------------------------------------------------------------


def _sessions() -> tuple[AvatarSessions, list[int]]:
    renders: list[int] = []

    def encode(image: np.ndarray) -> dict[str, np.ndarray]:
        assert image.shape[0] == 1
        value = float(image.mean())
        return {
            "source_volume": np.full((1, 2), value, np.float32),
            "source_compressed": np.full((1, 1), value, np.float32),
        }

    def render(volume: Any, compressed: Any, kp_s: Any, kp_d: Any) -> np.ndarray:
        renders.append(volume.shape[0])
        out: np.ndarray = volume[:, :1] + kp_d[:, :1] - kp_s[:, :1]  # depends on every input
        return out

    return AvatarSessions(encode, render, capacity=2), renders


def _request(avatar: str, kp: float, image: float | None = None, rows: int = 1) -> dict[str, Any]:
    request = {
        "avatar_id": np.array([[avatar.encode()]] * rows, dtype=object),
        "kp_source": np.zeros((rows, 1), np.float32),
        "kp_driving": np.full((rows, 1), kp, np.float32),
    }
    if image is not None:
        request["source_image"] = np.full((rows, 3), image, np.float32)
    return request


def test_session_model_keeps_avatars_and_batches_requests() -> None:
    sessions, renders = _sessions()
    first = sessions.render_batch(
        [_request("ann", 0.5, image=1.0), _request("bob", 0.0, image=2.0)]
    )
    assert [float(r["prediction"][0, 0]) for r in first] == [1.5, 2.0]
    assert renders == [2] and sessions.encoded == 2  # one call for both, each avatar encoded
    later = sessions.render_batch([_request("ann", 0.1, rows=2), _request("bob", 0.2)])
    assert [r["prediction"].shape[0] for r in later] == [2, 1]
    assert renders == [2, 3] and sessions.encoded == 2  # no image sent, none encoded
    # unknown avatar: that request fails alone, with the marker the client looks for
    mixed = sessions.render_batch([_request("cat", 0.0), _request("ann", 0.0)])
    assert isinstance(mixed[0], UnknownAvatar) and str(mixed[0]).startswith("UNKNOWN_AVATAR")
    assert float(mixed[1]["prediction"][0, 0]) == 1.0
    sessions.render_batch([_request("cat", 0.0, image=3.0)])  # capacity 2: evicts bob
    assert "bob" not in sessions and "ann" in sessions and "cat" in sessions


# --- repository ---------------------------------------------------------------------------------


def _entry(network: str, inputs: list[tuple[str, tuple[int, ...]]], outputs: list[Any]) -> Any:
    def tensors(items: list[tuple[str, tuple[int, ...]]]) -> tuple[TensorEntry, ...]:
        return tuple(TensorEntry(name, shape, {0: "batch"}, "float32") for name, shape in items)

    return NetworkEntry(
        network,
        f"{network}.onnx",
        "0" * 64,
        1,
        20,
        network,
        tensors(inputs),
        tensors(outputs),
        ParityEntry(0.0, 1.0, 1.0, True, (1, 2)),
    )


def test_repository_layout_and_configs(tmp_path: Path) -> None:
    from engines.manifest import ExportManifest, write_manifest
    from engines.triton_engine import model_version
    from export.triton_repo import TritonOptions, write_repository

    export = tmp_path / "export"
    export.mkdir()
    entries = {
        "mapping": _entry("mapping", [("coeffs", (2, 70, 27))], [("yaw", (2, 66))]),
        "generator_source_encoder": _entry(
            "generator_source_encoder",
            [("source_image", (1, 3, 128, 128))],
            [("source_volume", (1, 32, 16, 32, 32)), ("source_compressed", (1, 4, 16, 32, 32))],
        ),
        "generator_render": _entry(
            "generator_render",
            [
                ("source_volume", (1, 32, 16, 32, 32)),
                ("kp_source", (1, 15, 3)),
                ("kp_driving", (1, 15, 3)),
            ],
            [("prediction", (1, 3, 128, 128))],
        ),
    }
    for entry in entries.values():
        (export / entry.file).write_bytes(b"onnx")
    manifest = ExportManifest(128, "abcdef0123456789", ("x.safetensors",), "now", {}, entries)
    write_manifest(export, manifest)
    repo = tmp_path / "repo"
    options = TritonOptions(max_batch_size=8, queue_delay_us=3000, instances=2)
    models = write_repository(export, repo, options)
    assert models == [*entries, "generator_session"]
    version = str(model_version("abcdef0123456789"))
    assert (repo / "generator_render" / version / "model.onnx").read_bytes() == b"onnx"
    assert (repo / "generator_session" / version / "model.py").is_file()
    render = (repo / "generator_render" / "config.pbtxt").read_text()
    for text in (
        'backend: "onnxruntime"',
        "max_batch_size: 8",
        "dims: [ 32, 16, 32, 32 ]",  # the batch axis is Triton's implicit one
        "max_queue_delay_microseconds: 3000",
        "count: 2\n    kind: KIND_GPU",
        'string_value: "abcdef0123456789"',
    ):
        assert text in render, text
    session = (repo / "generator_session" / "config.pbtxt").read_text()
    assert 'backend: "python"' in session and "optional: true" in session
    assert "TYPE_STRING" in session and "dims: [ 3, 128, 128 ]" in session
    assert json.loads((repo / "models.json").read_text())["models"] == models
    assert read_manifest(export).size == 128


def test_client_errors_without_a_server() -> None:
    pytest.importorskip("tritonclient.grpc")
    from engines.registry import open_engines
    from engines.triton_engine import TritonEngineSet

    with pytest.raises(EngineUnavailable, match="no server URL"):
        TritonEngineSet(None, 256, ["mapping"], url="", version="1")
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(EngineUnavailable, match=f"server at 127.0.0.1:{port} is not reachable"):
        TritonEngineSet(None, 256, ["mapping"], url=f"127.0.0.1:{port}", version="1", timeout_s=5)
    from msadtalker.errors import ConfigError

    with pytest.raises(ConfigError, match="--engine-url is for the triton backend"):
        open_engines("torch", None, 256, ["mapping"], "cpu", url="x:1")


# --- a real Triton (slow) -----------------------------------------------------------------------


def _pytriton_python() -> Path | None:
    configured = os.environ.get(PYTRITON_ENV)
    if configured:
        return Path(configured)
    return PYTRITON_VENV if PYTRITON_VENV.is_file() else None


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


SIZE = 128
TEST_FINGERPRINT = "0123456789abcdef"


@pytest.fixture(scope="module")
def small_export(synthetic_checkpoints: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The generator views at 128² (from the 256 weights) and the mapping, no parity check."""
    from export.manifest import network_entry, open_manifest, record
    from export.onnx import export_network
    from msadtalker.models.generator import (
        FrameRenderer,
        OcclusionAwareSPADEGenerator,
        SourceEncoder,
    )
    from msadtalker.weights import build_network, load_weights

    out = tmp_path_factory.mktemp("triton_export")
    generator = build_network("generator", load_weights(synthetic_checkpoints, 256, ["generator"]))
    mapping = build_network("mapping", load_weights(synthetic_checkpoints, 256, ["mapping"]))
    assert isinstance(generator, OcclusionAwareSPADEGenerator)
    manifest = open_manifest(out, TEST_FINGERPRINT, ("synthetic",), SIZE)
    for name, module in (
        ("mapping", mapping),
        ("generator_source_encoder", SourceEncoder(generator)),
        ("generator_render", FrameRenderer(generator)),
    ):
        result = export_network(name, module.eval(), SIZE, out, parity=False)
        manifest = record(
            out, manifest, network_entry(name, result.path, 20, result.contract, None)
        )
    return out


def _wait_for_ready(stream: IO[bytes], timeout_s: float) -> str | None:
    """None once the server printed its ready mark (anywhere in a line: Triton's log shares
    the pipe); else the last lines it printed (it failed)."""
    deadline = time.monotonic() + timeout_s
    lines: deque[str] = deque(maxlen=5)
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([stream], [], [], left)
        if not ready:
            break
        line = stream.readline().decode(errors="replace")
        if not line:  # end of output: the server exited
            break
        if READY_MARK in line:
            return None
        lines.append(line.strip())
    return " | ".join(lines) or "no output"


def _drain(stream: IO[bytes]) -> None:
    for _ in iter(stream.readline, b""):
        pass


@pytest.fixture(scope="module")
def triton_url(small_export: Path) -> Iterator[str]:
    python = _pytriton_python()
    if python is None:
        pytest.skip(
            "nvidia-pytriton is not installed: run scripts/install-pytriton.sh "
            f"(its own venv, numpy < 2) or set ${PYTRITON_ENV}"
        )
    from engines.triton_engine import model_version

    grpc_port, http_port, metrics_port = _free_ports(3)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [
        str(python), str(REPO / "tests" / "triton_server.py"), "--export", str(small_export),
        "--version", str(model_version(TEST_FINGERPRINT)), "--grpc-port", str(grpc_port),
        "--http-port", str(http_port), "--metrics-port", str(metrics_port),
        "--delay-us", "500000",  # a long gather window: concurrent sessions surely batch
    ]  # fmt: skip
    # Unbuffered: ``_wait_for_ready`` selects on the pipe, and a buffered reader could hold the
    # ready line (read with the log lines before it) where select does not see it.
    server = subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        bufsize=0,
    )
    assert server.stdout is not None and server.stdin is not None
    said = _wait_for_ready(server.stdout, timeout_s=300)
    if said is not None:
        server.kill()
        server.wait()
        pytest.fail(f"the PyTriton server did not start (exit {server.poll()}): {said}")
    # Triton keeps logging to stdout: drain it so a full pipe never blocks the server.
    drain = threading.Thread(target=_drain, args=(server.stdout,), daemon=True)
    drain.start()
    try:
        yield f"127.0.0.1:{grpc_port}"
    finally:
        server.stdin.close()  # the server stops when its stdin closes
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _local(small_export: Path, network: str) -> Any:
    import onnxruntime

    from engines.contracts import contract_for
    from engines.onnx_engine import OnnxEngine

    entry = read_manifest(small_export).networks[network]
    session = onnxruntime.InferenceSession(
        str(small_export / entry.file), providers=["CPUExecutionProvider"]
    )
    return OnnxEngine(network, session, contract_for(network, SIZE))


@pytest.mark.neural
@pytest.mark.slow
def test_frames_through_triton_equal_local_frames(triton_url: str, small_export: Path) -> None:
    pytest.importorskip("tritonclient.grpc")
    from engines.contracts import contract_for
    from engines.triton_engine import RemoteSource, TritonEngineSet, model_version
    from export.onnx import TOLERANCES

    version = str(model_version(TEST_FINGERPRINT))
    networks = ["mapping", "generator_source_encoder", "generator_render"]
    remote = TritonEngineSet(None, SIZE, networks, url=triton_url, timeout_s=600, version=version)
    rng = np.random.default_rng(0)
    image = rng.random((1, 3, SIZE, SIZE), dtype=np.float32)
    kp_source = (rng.random((1, 15, 3), dtype=np.float32) * 1.6 - 0.8).astype(np.float32)
    driving = [(kp_source + 0.04 * i).astype(np.float32) for i in range(3)]

    # the mapping network: a plain model, dynamic batch
    coeffs = [t.numpy() for t in contract_for("mapping", SIZE).example_inputs()]
    got = remote.engine("mapping").run(*coeffs)
    want = _local(small_export, "mapping").run(*coeffs)
    for name in want:
        assert float(np.abs(got[name] - want[name]).max()) <= 1e-5

    # the session path: a handle, no features sent; then three sessions at once
    handle = remote.engine("generator_source_encoder").run(image, keep_on_device=True)
    source = handle["source_volume"]
    assert isinstance(source, RemoteSource)
    render = remote.engine("generator_render")
    results: dict[int, Any] = {}
    start = threading.Barrier(3)

    def session(i: int) -> None:
        start.wait()
        results[i] = render.run(source, source, kp_source, driving[i])["prediction"]

    threads = [threading.Thread(target=session, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    features = _local(small_export, "generator_source_encoder").run(image)
    local_render = _local(small_export, "generator_render")
    bound = TOLERANCES["generator_render"].bound(1.0)
    for i in range(3):
        want = local_render.run(
            features["source_volume"], features["source_compressed"], kp_source, driving[i]
        )
        assert results[i].shape == (1, 3, SIZE, SIZE)
        assert float(np.abs(results[i] - want["prediction"]).max()) <= bound
    stats = remote._connection.client.get_inference_statistics("generator_session", as_json=True)  # noqa: SLF001
    sizes = {int(b["batch_size"]) for b in stats["model_stats"][0].get("batch_stats", [])}
    assert max(sizes) > 1, sizes  # Triton ran the sessions' frames together

    # a server that lost the avatar: the client sends the image again
    fresh = RemoteSource("not-on-the-server", image)
    remote._known.add(fresh.avatar_id)  # noqa: SLF001 - the client believes it was sent
    again = render.run(fresh, fresh, kp_source, driving[0])["prediction"]
    assert float(np.abs(again - results[0]).max()) <= bound

    # another checkpoint set / export: a clear refusal naming the versions
    with pytest.raises(
        EngineUnavailable, match=f"no ready mapping version 12345 .serves: {version}"
    ):
        TritonEngineSet(None, SIZE, ["mapping"], url=triton_url, version="12345")
    # a slow server: the timeout names the model and the cause
    with pytest.raises(EngineUnavailable, match="did not answer within 0.001 s"):
        hasty = TritonEngineSet(
            None, SIZE, networks, url=triton_url, timeout_s=1e-3, version=version
        )
        hasty.engine("generator_render").run(source, source, kp_source, driving[0])
    remote.close()


def test_export_format_triton_needs_a_repository() -> None:
    import argparse

    from msadtalker.errors import ConfigError
    from streamer.commands import export

    parser = argparse.ArgumentParser(prog="msadtalker")
    export.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["export", "--format", "triton", "--triton-instances", "2"])
    with pytest.raises(ConfigError, match="--format triton needs --out REPO"):
        args.run(args)
