"""torch -> ONNX export of the SadTalker networks from their ``ExportContract``.

For each network: build our module with the checkpoint's weights (``msadtalker.weights``,
strict), export it with the names, example inputs and dynamic axes of its contract
(``engines.contracts.contract_for``), run the ONNX checker (full check: strict shape
inference), then compare onnxruntime with the torch module on the contract's example inputs
and on a batch one larger (which exercises the dynamic axes). The comparison passes when
``max |ort - torch| <= atol + rtol * max |torch|`` over every output, plus mean and
fraction-off bounds for the networks with the dense-motion mask threshold (``TOLERANCES``).

Exporter choices (measured with torch 2.13, onnx 1.23, onnxruntime 1.32; docs/export.md):

* Opset 20 by default: the generator's two 5-D ``grid_sample`` calls are only in the ONNX
  GridSample specification from opset 20 (``MIN_OPSETS``); the other networks export at 17+.
  ``warp="sliced"`` exports those warps as 2-D grid samples over depth slices
  (``msadtalker.models.volume_sampling``), for runtimes without 5-D GridSample; the generator
  then exports at 17+ too, and its parity is still judged against the volumetric torch module.
* The TorchScript exporter (``dynamo=False``). The torch.export-based one needs onnxscript
  (not in the verified environment) and exports the generator with an off-spec opset-17
  GridSample when asked for less than 18. Its deprecation warning and two known-benign
  warnings (see ``export_onnx``) are silenced, nothing else.
* Constant folding on; spectral norm is already folded at load, so no live MatMul/Div remain.
* Export from a module in eval mode (the exporter restores train/eval flags recursively).

Each file is written under a temporary name and renamed when the checker passed, so a failed
export never leaves a half file under the final name.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np
import torch
from torch import nn

from engines.contracts import contract_for
from engines.manifest import ParityEntry
from export.tolerance import Tolerance
from msadtalker.catalog import MAPPING_FILES, NETWORKS, STREAMING_NETWORKS, VIEWS, base_network
from msadtalker.errors import ConfigError
from msadtalker.models.contract import ExportContract
from msadtalker.models.volume_sampling import SAMPLERS, use_volume_sampler
from msadtalker.weights import (
    build_network,
    build_view,
    checkpoint_fingerprint,
    load_weights,
    locate_checkpoints,
    validate_safetensors,
)

log = logging.getLogger(__name__)

DEFAULT_OPSET = 20
MIN_OPSET = 17
MIN_OPSETS: Mapping[str, int] = MappingProxyType(
    {"generator": 20, "generator_source_encoder": 17, "generator_render": 20}
)
# What ``msadtalker export`` exports without --networks: everything a stream runs. The whole
# generator (offline, four outputs incl. the large motion by-products) only on request.
DEFAULT_NETWORKS = STREAMING_NETWORKS


# Per output, scale = max |torch output|: outputs range from ~0.2 (mapping t) to ~30 (generator
# volume), hence the relative term (export.tolerance).
# Smooth networks, measured on synthetic seed-0 weights (docs/export.md): relative max |diff|
# 0.7e-6 .. 1.4e-5; the bounds leave >= 10x headroom for other weights and inputs.
# Thresholded ones: one flipped mask entry was seen to move one deformation voxel by 9.4e-4 and
# 0.25 % of the image values by > 1e-3 (max 7.5e-3, mean 1.9e-5): the fraction bound allows a
# few flips, the mean bound (5x the measured mean) catches a wrong op, which moves everything.
_THRESHOLDED = Tolerance(2e-2, rtol=0.0, mean_abs=1e-4, frac_off=1e-2, off=1e-3)
TOLERANCES: Mapping[str, Tolerance] = MappingProxyType(
    {
        "audio2exp": Tolerance(1e-6, rtol=1e-4),
        "face_3drecon": Tolerance(1e-6, rtol=1e-4),
        "mapping": Tolerance(1e-6, rtol=1e-4),
        "mapping_full": Tolerance(1e-6, rtol=1e-4),
        "kp_extractor": Tolerance(1e-6, rtol=2e-4),
        "generator_source_encoder": Tolerance(1e-6, rtol=2e-4),
        "generator_render": _THRESHOLDED,
        "generator": _THRESHOLDED,
    }
)


@dataclass(frozen=True)
class ExportedNetwork:
    """One exported file and how it compared with torch (``parity`` None when skipped)."""

    network: str
    path: Path
    opset: int
    contract: ExportContract
    parity: ParityEntry | None
    export_seconds: float
    parity_seconds: float


WARPS = tuple(SAMPLERS)  # volumetric (default), sliced


def check_opset(network: str, opset: int, warp: str = "volumetric") -> None:
    if warp not in WARPS:
        raise ConfigError(f"--warp {warp}: choose from {', '.join(WARPS)}")
    minimum = MIN_OPSET if warp == "sliced" else max(MIN_OPSET, MIN_OPSETS.get(network, MIN_OPSET))
    if opset < minimum:
        raise ConfigError(
            f"--opset {opset}: {network} needs opset >= {minimum} (5-D GridSample is in ONNX "
            "from opset 20)" + " (or export with --warp sliced)"
            if minimum >= 20
            else f"--opset {opset}: {network} needs opset >= {minimum}"
        )


def require_onnx() -> None:
    """One line when the export packages are missing (they are an optional extra)."""
    for package in ("onnx", "onnxruntime"):
        try:
            __import__(package)
        except ImportError:
            raise ConfigError(
                f"msadtalker export needs the Python package {package} "
                "(pip install 'msadtalker[export]')"
            ) from None


def export_onnx(module: nn.Module, contract: ExportContract, path: Path, opset: int) -> None:
    """Export ``module`` to ``path`` per ``contract`` and run the ONNX checker on the file."""
    import onnx

    module.eval()
    tmp = path.with_name(f".{path.name}.partial")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore",
                message=".*legacy TorchScript-based ONNX export",
                category=DeprecationWarning,
            )
            warnings.filterwarnings(
                "ignore", message="The feature will be removed", category=DeprecationWarning
            )
            # SPADE's F.instance_norm uses instance statistics in eval too, which is what the
            # exporter's "train=True" InstanceNormalization computes: nothing to fix.
            warnings.filterwarnings("ignore", message=".*operator 'instance_norm' is set to train")
            # F.instance_norm's input check on the (fixed) spatial size, traced as a constant.
            warnings.filterwarnings(
                "ignore",
                message="Converting a tensor to a Python boolean",
                module="torch.nn.functional",
            )
            torch.onnx.export(
                module,
                contract.example_inputs(),
                str(tmp),
                input_names=contract.input_names,
                output_names=contract.output_names,
                dynamic_axes=contract.dynamic_axes(),
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
        # Path form: works for files above protobuf's 2 GB in-memory limit too.
        onnx.checker.check_model(str(tmp), full_check=True)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def resized_inputs(
    contract: ExportContract, sizes: Mapping[str, int], seed: int = 0
) -> tuple[torch.Tensor, ...]:
    """The contract's example inputs with every dynamic axis named in ``sizes`` resized.

    Growing an axis appends perturbed copies of the example (so batch rows differ and a graph
    that mixes rows is caught), kept within the example's value range."""
    generator = torch.Generator().manual_seed(seed)
    # Some factories draw from the global generator: seed it, without disturbing the caller's.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        examples = contract.example_inputs()
    resized = []
    for tensor, spec in zip(examples, contract.inputs, strict=True):
        out = tensor
        for axis, name in spec.dynamic.items():
            if name not in sizes:
                continue
            target = sizes[name]
            pieces = [out]
            while sum(piece.shape[axis] for piece in pieces) < target:
                noise = torch.randn(out.shape, generator=generator, dtype=out.dtype)
                spread = float(out.std()) if out.numel() > 1 else 1.0
                pieces.append((out + 0.05 * spread * noise).clamp(out.min(), out.max()))
            out = torch.cat(pieces, dim=axis).narrow(axis, 0, target)
        resized.append(out.contiguous())
    return tuple(resized)


def _example_sizes(contract: ExportContract) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for spec in contract.inputs:
        for axis, name in spec.dynamic.items():
            sizes.setdefault(name, spec.shape[axis])
    return sizes


def _outputs(module: nn.Module, inputs: Sequence[torch.Tensor]) -> list[np.ndarray]:
    with torch.inference_mode():
        out = module(*inputs)
    tensors = (out,) if isinstance(out, torch.Tensor) else tuple(out)
    return [t.detach().float().numpy() for t in tensors]


Runner = Callable[[Sequence[torch.Tensor]], Sequence[np.ndarray]]


def compare_outputs(
    reference: Runner,
    candidate: Runner,
    contract: ExportContract,
    tolerance: Tolerance,
    grow_batch: bool = True,
) -> ParityEntry:
    """Worst figures over all outputs of ``candidate`` vs ``reference`` on the contract's
    example inputs and, with ``grow_batch``, on inputs with every dynamic axis one larger."""
    example = _example_sizes(contract)
    trials = [example]
    if grow_batch and example:
        trials.append({name: size + 1 for name, size in example.items()})
    worst = mean = frac = scale = 0.0
    batch_sizes = []
    for trial, sizes in enumerate(trials):
        inputs = resized_inputs(contract, sizes, seed=trial)
        expected = reference(inputs)
        got = candidate(inputs)
        for name, ref, value in zip(contract.output_names, expected, got, strict=True):
            if ref.shape != value.shape:
                raise RuntimeError(
                    f"{contract.name}: output {name} has shape {value.shape}, the reference "
                    f"gives {ref.shape}"
                )
            diff = np.abs(ref.astype(np.float64) - value)
            worst = max(worst, float(diff.max()))
            mean = max(mean, float(diff.mean()))
            frac = max(frac, float((diff > tolerance.off).mean()))
            scale = max(scale, float(np.abs(ref).max()))
        batch_sizes.append(next(iter(sizes.values()), 1))
    return ParityEntry(
        max_abs_diff=worst,
        reference_scale=scale,
        tolerance=tolerance.bound(scale),
        ok=tolerance.allows(worst, mean, frac, scale),
        batch_sizes=tuple(batch_sizes),
        mean_abs_diff=mean,
        mean_tolerance=tolerance.mean_abs,
        frac_off=frac,
        frac_tolerance=tolerance.frac_off,
    )


def onnxruntime_runner(path: Path, contract: ExportContract) -> Runner:
    """A CPU onnxruntime session on ``path`` as a runner (inputs in contract order)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def run(inputs: Sequence[torch.Tensor]) -> Sequence[np.ndarray]:
        feeds = {spec.name: t.numpy() for spec, t in zip(contract.inputs, inputs, strict=True)}
        outputs: Sequence[np.ndarray] = session.run(contract.output_names, feeds)
        return outputs

    return run


def check_parity(
    path: Path,
    module: nn.Module,
    contract: ExportContract,
    tolerance: Tolerance,
    grow_batch: bool = True,
) -> ParityEntry:
    """onnxruntime (CPU) on ``path`` vs ``module``; see :func:`compare_outputs`."""
    return compare_outputs(
        lambda inputs: _outputs(module, inputs),
        onnxruntime_runner(path, contract),
        contract,
        tolerance,
        grow_batch,
    )


def export_network(
    network: str,
    module: nn.Module,
    size: int,
    out_dir: Path,
    opset: int = DEFAULT_OPSET,
    parity: bool = True,
    grow_batch: bool = True,
    warp: str = "volumetric",
) -> ExportedNetwork:
    """Export one built module as ``<out_dir>/<network>.onnx`` and check it against torch.

    ``warp``: the form of the volume warps in the file; the torch reference of the parity
    check is always the volumetric module (the official computation)."""
    check_opset(network, opset, warp)
    contract = contract_for(network, size)
    path = out_dir / f"{network}.onnx"
    started = time.perf_counter()
    try:
        export_onnx(use_volume_sampler(module, warp), contract, path, opset)
    finally:
        use_volume_sampler(module, "volumetric")
    exported = time.perf_counter()
    figures = None
    if parity:
        figures = check_parity(path, module, contract, TOLERANCES[network], grow_batch)
    finished = time.perf_counter()
    if figures is not None and not figures.ok:
        log.error("%s: onnxruntime differs from torch: %s", network, figures.describe())
    return ExportedNetwork(
        network, path, opset, contract, figures, exported - started, finished - exported
    )


def resolve_networks(names: Iterable[str] | None) -> list[str]:
    """``--networks`` -> a checked, de-duplicated list (default ``DEFAULT_NETWORKS``)."""
    if names is None:
        return list(DEFAULT_NETWORKS)
    wanted = list(dict.fromkeys(names))
    unknown = [name for name in wanted if name not in NETWORKS]
    if unknown:
        raise ConfigError(
            f"--networks: unknown {', '.join(unknown)} (choose from {', '.join(NETWORKS)})"
        )
    if not wanted:
        raise ConfigError("--networks: name at least one network")
    return wanted


def built_modules(
    checkpoints: str | Path | None, size: int, networks: Sequence[str]
) -> Iterator[tuple[str, nn.Module]]:
    """``(network, module)`` grouped by checkpoint network: each is loaded once, shared by the
    generator's views, and dropped before the next is loaded (peak memory: one network)."""
    groups: dict[str, list[str]] = {}
    for network in networks:
        groups.setdefault(base_network(network), []).append(network)
    for base, members in groups.items():
        module = build_network(base, load_weights(checkpoints, size, [base]))
        for network in members:
            yield network, build_view(network, module) if network in VIEWS else module
        del module


def prepare_out_dir(path: Path) -> Path:
    """Create ``path`` if needed and prove it writable; ConfigError (one line) otherwise."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--out {path}: exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise ConfigError(f"--out {path}: cannot write there ({exc.strerror or exc})") from None
    return path


def export_checkpoints(
    checkpoints: str | Path | None,
    out_dir: Path,
    size: int = 256,
    networks: Iterable[str] | None = None,
    opset: int = DEFAULT_OPSET,
    parity: bool = True,
    grow_batch: bool = True,
    progress: Callable[[ExportedNetwork], None] | None = None,
    warp: str = "volumetric",
) -> list[ExportedNetwork]:
    """Export ``networks`` of the checkpoint set for render size ``size`` into ``out_dir`` and
    record each in its manifest. Bad checkpoints / flags / out dir raise an ``InputError``
    before anything is written; ``progress`` is called after each network."""
    from export.manifest import network_entry, open_manifest, record

    require_onnx()
    wanted = resolve_networks(networks)
    for network in wanted:
        check_opset(network, opset, warp)
    mapping = [n for n in wanted if n in MAPPING_FILES]
    files = locate_checkpoints(checkpoints, size, mapping)
    validate_safetensors(files.safetensors)
    fingerprint = checkpoint_fingerprint(files.directory, size)
    present = locate_checkpoints(files.directory, size, _present_mapping(files.directory))
    names = (present.safetensors.name, *(p.name for p in present.mapping.values()))
    out_dir = prepare_out_dir(out_dir)
    manifest = open_manifest(out_dir, fingerprint, names, size)
    results = []
    for network, module in built_modules(files.directory, size, wanted):
        result = export_network(network, module, size, out_dir, opset, parity, grow_batch, warp)
        warped = warp if base_network(network) == "generator" else "volumetric"
        entry = network_entry(network, result.path, opset, result.contract, result.parity, warped)
        manifest = record(out_dir, manifest, entry)
        results.append(result)
        if progress is not None:
            progress(result)
    return results


def _present_mapping(directory: Path) -> list[str]:
    return [name for name, file in MAPPING_FILES.items() if (directory / file).is_file()]
