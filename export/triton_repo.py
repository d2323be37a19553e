"""An export directory -> a Triton model repository (``msadtalker export --format triton``).

Layout (NVIDIA Triton Inference Server, model repository format)::

    REPO/<network>/config.pbtxt      one per exported network (ONNX Runtime backend)
    REPO/<network>/<V>/model.onnx    the exported file; V = model_version(fingerprint)
    REPO/generator_session/config.pbtxt, <V>/model.py   the per-avatar generator (Python
                                     backend, export.triton_session; needs both generator views)
    REPO/msadtalker_manifest.json    the export manifest (checkpoint fingerprint, parity)

Each ``config.pbtxt`` comes from the network's ``ExportContract``: axis 0 (dynamic ``batch``)
becomes Triton's implicit batch dimension (``max_batch_size``), the other axes its ``dims``;
``dynamic_batching`` gathers the requests of concurrent sessions (a queue delay of a few ms);
``instance_group`` places ``instances`` copies on the GPUs (``KIND_GPU``) or CPUs. The
model version is derived from the checkpoint fingerprint (``engines.triton_engine.
model_version``; the fingerprint and render size are also model ``parameters``), so the
``triton`` engine asks for exactly the weights it was opened for and refuses a server that
serves another checkpoint set. TensorRT plans, when the export
built them, are not placed here (Triton's TensorRT backend needs them built for its own GPU and
TensorRT version: build them on the serving machine with ``--format tensorrt``).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from engines.manifest import MANIFEST_NAME, NetworkEntry, TensorEntry, read_manifest
from engines.triton_engine import model_version
from msadtalker.errors import ConfigError

SESSION_MODEL = "generator_session"
SESSION_NEEDS = ("generator_source_encoder", "generator_render")
REPO_MANIFEST = "msadtalker_manifest.json"
FINGERPRINT_PARAMETER = "msadtalker_fingerprint"
SIZE_PARAMETER = "msadtalker_size"
_TRITON_DTYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "int64": "TYPE_INT64"}


@dataclass(frozen=True)
class TritonOptions:
    """Serving choices written into every ``config.pbtxt``."""

    max_batch_size: int = 16
    queue_delay_us: int = 4000  # the dynamic batcher's gather window
    instances: int = 1
    kind: str = "KIND_GPU"  # or KIND_CPU
    avatar_capacity: int = 64  # generator_session: avatars kept on the server

    def __post_init__(self) -> None:
        if self.max_batch_size < 1 or self.instances < 1 or self.queue_delay_us < 0:
            raise ConfigError("triton: max batch size and instances must be >= 1, queue delay >= 0")
        if self.kind not in ("KIND_GPU", "KIND_CPU"):
            raise ConfigError(
                f"triton: instance kind must be KIND_GPU or KIND_CPU, not {self.kind}"
            )


def _tensor_block(entries: Iterable[tuple[str, str, Sequence[int], bool]]) -> list[str]:
    lines = []
    for name, dtype, dims, optional in entries:
        extra = "\n    optional: true" if optional else ""
        lines.append(
            f'  {{\n    name: "{name}"\n    data_type: {dtype}\n'
            f"    dims: [ {', '.join(str(d) for d in dims)} ]{extra}\n  }}"
        )
    return lines


def _config(
    name: str,
    backend: str,
    inputs: list[tuple[str, str, Sequence[int], bool]],
    outputs: list[tuple[str, str, Sequence[int], bool]],
    options: TritonOptions,
    parameters: dict[str, str],
) -> str:
    preferred = sorted({b for b in (4, 8, options.max_batch_size) if b <= options.max_batch_size})
    params = "\n".join(
        f'parameters {{\n  key: "{key}"\n  value: {{ string_value: "{value}" }}\n}}'
        for key, value in parameters.items()
    )
    return (
        f'name: "{name}"\n'
        f'backend: "{backend}"\n'
        f"max_batch_size: {options.max_batch_size}\n"
        "input [\n" + ",\n".join(_tensor_block(inputs)) + "\n]\n"
        "output [\n" + ",\n".join(_tensor_block(outputs)) + "\n]\n"
        "dynamic_batching {\n"
        f"  preferred_batch_size: [ {', '.join(str(b) for b in preferred)} ]\n"
        f"  max_queue_delay_microseconds: {options.queue_delay_us}\n"
        "}\n"
        "instance_group [\n"
        f"  {{\n    count: {options.instances}\n    kind: {options.kind}\n  }}\n]\n"
        "version_policy: { latest { num_versions: 1 } }\n"
        f"{params}\n"
    )


def network_config(entry: NetworkEntry, options: TritonOptions, parameters: dict[str, str]) -> str:
    """``config.pbtxt`` of one exported network (ONNX Runtime backend)."""

    def specs(tensors: Sequence[TensorEntry]) -> list[tuple[str, str, Sequence[int], bool]]:
        out: list[tuple[str, str, Sequence[int], bool]] = []
        for tensor in tensors:
            if 0 not in tensor.dynamic:
                raise ConfigError(
                    f"triton: {entry.network}.{tensor.name} has no dynamic batch axis"
                )
            dims = [-1 if axis in tensor.dynamic else n for axis, n in enumerate(tensor.shape)]
            out.append((tensor.name, _TRITON_DTYPES[tensor.dtype], dims[1:], False))
        return out

    return _config(
        entry.network,
        "onnxruntime",
        specs(entry.inputs),
        specs(entry.outputs),
        options,
        parameters,
    )


def session_config(render: NetworkEntry, options: TritonOptions, parameters: dict[str, str]) -> str:
    """``config.pbtxt`` of ``generator_session`` (Python backend, export.triton_session)."""
    kp = next(t for t in render.inputs if t.name == "kp_driving")
    image = next(t for t in render.outputs if t.name == "prediction")
    kp_dims = list(kp.shape[1:])
    image_dims = list(image.shape[1:])
    inputs: list[tuple[str, str, Sequence[int], bool]] = [
        ("avatar_id", "TYPE_STRING", [1], False),
        ("kp_source", "TYPE_FP32", kp_dims, False),
        ("kp_driving", "TYPE_FP32", kp_dims, False),
        ("source_image", "TYPE_FP32", image_dims, True),
    ]
    outputs: list[tuple[str, str, Sequence[int], bool]] = [
        ("prediction", "TYPE_FP32", image_dims, False)
    ]
    session_options = TritonOptions(
        options.max_batch_size, options.queue_delay_us, options.instances, "KIND_CPU"
    )
    params = {**parameters, "avatar_capacity": str(options.avatar_capacity)}
    return _config(SESSION_MODEL, "python", inputs, outputs, session_options, params)


def write_repository(
    export_dir: Path, repo: Path, options: TritonOptions, networks: Iterable[str] | None = None
) -> list[str]:
    """Lay out ``repo`` from the ONNX export in ``export_dir``; returns the model names.

    Files are hard-linked where the file system allows (the render view is ~400 MB), else
    copied; each model directory is replaced whole."""
    manifest = read_manifest(export_dir)
    wanted = list(manifest.networks) if networks is None else list(networks)
    missing = [name for name in wanted if name not in manifest.networks]
    if missing:
        raise ConfigError(f"triton: {', '.join(missing)} not in the export at {export_dir}")
    parameters = {
        FINGERPRINT_PARAMETER: manifest.checkpoint_fingerprint,
        SIZE_PARAMETER: str(manifest.size),
    }
    version = str(model_version(manifest.checkpoint_fingerprint))
    repo.mkdir(parents=True, exist_ok=True)
    models = []
    for name in wanted:
        entry = manifest.networks[name]
        target = _fresh_model_dir(repo, name, version)
        _link_or_copy(export_dir / entry.file, target / version / "model.onnx")
        (target / "config.pbtxt").write_text(network_config(entry, options, parameters))
        models.append(name)
    if all(name in wanted for name in SESSION_NEEDS):
        target = _fresh_model_dir(repo, SESSION_MODEL, version)
        model_py = target / version / "model.py"
        shutil.copyfile(Path(__file__).with_name("triton_session.py"), model_py)
        config = session_config(manifest.networks["generator_render"], options, parameters)
        (target / "config.pbtxt").write_text(config)
        models.append(SESSION_MODEL)
    shutil.copyfile(export_dir / MANIFEST_NAME, repo / REPO_MANIFEST)
    (repo / "models.json").write_text(json.dumps({"models": models}, indent=2) + "\n")
    return models


def _fresh_model_dir(repo: Path, name: str, version: str) -> Path:
    target = repo / name
    if target.exists():
        shutil.rmtree(target)
    (target / version).mkdir(parents=True)
    return target


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
