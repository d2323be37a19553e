"""A Triton test server: an ONNX export served by onnxruntime behind PyTriton's Triton.

Run by tests/test_triton.py with an interpreter that has ``nvidia-pytriton`` (its own venv:
PyTriton 0.7 pins numpy < 2; scripts/install-pytriton.sh makes it) and the repository on
PYTHONPATH. It binds, with the names, tensors, versions and dynamic batching of the model
repository that ``msadtalker export --format triton`` writes:

* each exported network, run by an onnxruntime session (CPU);
* ``generator_session``: ``export.triton_session.AvatarSessions`` over the two generator views,
  the per-avatar model of the repository.

PyTriton's bundled Triton has only the Python backend, so this stands in for the ONNX Runtime
backend and the repository's ``model.py``; the client sees the same KServe v2 models. Prints
``READY_MARK`` when every model is loaded and serves until stdin closes. ``--slow-s`` delays every
call (fault injection for the client's timeout). Imports no torch (the venv has none).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import sysconfig
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

READY_MARK = "MSADTALKER-TEST-TRITON-READY"  # tests/test_triton.py waits for it


def _library_path() -> None:
    """PyTriton's tritonserver links libpython: it needs this interpreter's lib/ directory."""
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    current = os.environ.get("LD_LIBRARY_PATH", "")
    if libdir and libdir not in current.split(":"):
        os.environ["LD_LIBRARY_PATH"] = f"{libdir}:{current}" if current else libdir


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--export", type=Path, required=True)
    parser.add_argument("--version", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--delay-us", type=int, default=50_000)
    parser.add_argument("--slow-s", type=float, default=0.0)
    parser.add_argument("--networks", nargs="*", help="serve only these (default: all)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    _library_path()

    import onnxruntime as ort
    from pytriton.decorators import batch
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig

    from export.triton_session import AvatarSessions

    manifest = json.loads((args.export / "manifest.json").read_text())
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    sessions = {
        name: ort.InferenceSession(
            str(args.export / entry["file"]), options, providers=["CPUExecutionProvider"]
        )
        for name, entry in manifest["networks"].items()
        if not args.networks or name in args.networks
    }
    config = ModelConfig(
        max_batch_size=args.max_batch,
        batcher=DynamicBatcher(max_queue_delay_microseconds=args.delay_us),
    )

    def tensors(entries: list[dict[str, Any]]) -> list[Any]:
        return [
            Tensor(name=t["name"], dtype=np.float32, shape=tuple(t["shape"][1:])) for t in entries
        ]

    def slow() -> None:
        if args.slow_s:
            time.sleep(args.slow_s)  # fault injection: a slow server, not synchronisation

    def plain(name: str) -> Callable[..., dict[str, np.ndarray]]:
        session = sessions[name]
        outputs = [t["name"] for t in manifest["networks"][name]["outputs"]]

        def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
            slow()
            return dict(zip(outputs, session.run(outputs, inputs), strict=True))

        batched: Callable[..., dict[str, np.ndarray]] = batch(infer)
        return batched

    encoder, renderer = sessions["generator_source_encoder"], sessions["generator_render"]
    avatars = AvatarSessions(
        lambda image: dict(
            zip(
                ("source_volume", "source_compressed"),
                encoder.run(None, {"source_image": image}),
                strict=True,
            )
        ),
        lambda volume, compressed, kp_s, kp_d: renderer.run(
            ["prediction"],
            {
                "source_volume": volume,
                "source_compressed": compressed,
                "kp_source": kp_s,
                "kp_driving": kp_d,
            },
        )[0],
    )

    def session_infer(requests: list[Any]) -> list[dict[str, np.ndarray]]:
        slow()
        results = avatars.render_batch([dict(request) for request in requests])
        for result in results:
            if isinstance(result, Exception):
                raise ValueError(str(result))  # PyTriton fails the whole batch
        return results

    render_entry = manifest["networks"]["generator_render"]
    kp = next(t for t in render_entry["inputs"] if t["name"] == "kp_driving")["shape"][1:]
    image = render_entry["outputs"][0]["shape"][1:]
    triton_config = TritonConfig(
        grpc_port=args.grpc_port,
        http_port=args.http_port,
        metrics_port=args.metrics_port,
        log_verbose=0,
    )
    # statistics open to the tests (they read the batch sizes Triton ran)
    security = TritonSecurityConfig(restricted_endpoints=["shared-memory", "model-repository"])
    with Triton(config=triton_config, security_config=security) as triton:
        for name in sessions:
            entry = manifest["networks"][name]
            triton.bind(
                model_name=name,
                infer_func=plain(name),
                inputs=tensors(entry["inputs"]),
                outputs=tensors(entry["outputs"]),
                model_version=args.version,
                config=config,
            )
        triton.bind(
            model_name="generator_session",
            infer_func=session_infer,
            inputs=[
                Tensor(name="avatar_id", dtype=bytes, shape=(1,)),
                Tensor(name="kp_source", dtype=np.float32, shape=tuple(kp)),
                Tensor(name="kp_driving", dtype=np.float32, shape=tuple(kp)),
                Tensor(name="source_image", dtype=np.float32, shape=tuple(image), optional=True),
            ],
            outputs=[Tensor(name="prediction", dtype=np.float32, shape=tuple(image))],
            model_version=args.version,
            config=config,
        )
        triton.run()
        # Triton's own log shares this stdout and may split our line: a marker it never
        # writes, on a line of its own.
        print(f"\n{READY_MARK}", flush=True)
        sys.stdin.read()  # serve until the test closes our stdin
    return 0


if __name__ == "__main__":
    sys.exit(main())
