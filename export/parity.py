"""Parity of our networks with the official SadTalker golden data (``golden_seed*.npz``).

Each check feeds the golden inputs to one piece of our implementation and compares with the
golden outputs (tolerances: the official golden data's recommendations, tests/data/README.md).
Everything is derived from the file (frame counts, batch layout, mapping widths, e2e frame
ranges), so any golden of this format works, official or compact (``export.golden``).

Networks run through an ``engines`` EngineSet (``make_engine`` opens one with
``engines.registry.open_engines``; any backend that implements the interface can be checked)
wrapped in a ``ParityEngine``: ``engine.network(name)`` returns a callable taking numpy inputs in
the network's ``ExportContract`` input order and returning its outputs by contract output name,
or ``None`` when the set cannot serve that network (then its checks are reported as skipped).
The generator is checked whole or as its split pair (source encoder once + per-frame render,
what ``msadtalker export`` writes by default and a stream runs): ``make_engine`` picks the form
the set can serve, so export-then-check-parity needs no extra export.
Pure functions (alignment, keypoint transformation, the mel) are called directly. A skipped
check proves nothing: ``all_ok`` is true only when every check ran and passed.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engines.base import EngineSet, EngineUnavailable, first_line
from engines.registry import open_engines
from export.tolerance import Tolerance
from msadtalker.catalog import mapping_network
from msadtalker.errors import ConfigError, InputError
from msadtalker.models.face_recon import (
    align_face,
    coeffs_73,
    fallback_five_points,
    knife_edge,
    resize_sides,
)
from msadtalker.models.keypoints import keypoint_transformation
from msadtalker.models.mapping import MappingOutput

log = logging.getLogger(__name__)

Arrays = Mapping[str, np.ndarray]
NetworkFn = Callable[..., dict[str, np.ndarray]]
FrameFn = Callable[[np.ndarray, np.ndarray], Arrays]  # (kp_source, kp_driving) -> outputs

EXPNET_CHUNK = 10  # upstream runs ExpNet on chunks of 10 frames
MAPPING_OUTPUTS = ("yaw", "pitch", "roll", "t", "exp")
SPLIT_GENERATOR = ("generator_source_encoder", "generator_render")
GENERATOR_FORMS = ("auto", "whole", "split")


# --- results ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParityResult:
    """One check. ``ok`` is None when skipped (``note`` says why)."""

    name: str
    tolerance: Tolerance
    max_abs_diff: float | None = None
    mean_abs_diff: float | None = None
    frac_off: float | None = None
    ok: bool | None = None
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "max_abs_diff": self.max_abs_diff,
            "tolerance": self.tolerance.atol,
            "ok": self.ok,
        }
        if self.tolerance.mean_abs is not None:
            entry["mean_abs_diff"] = self.mean_abs_diff
            entry["mean_tolerance"] = self.tolerance.mean_abs
        if self.tolerance.frac_off is not None:
            entry["frac_off"] = self.frac_off
            entry["frac_off_tolerance"] = self.tolerance.frac_off
            entry["off_threshold"] = self.tolerance.off
        if self.ok is None:
            entry["skipped"] = self.note
        elif self.note:
            entry["note"] = self.note
        return entry


def compare(name: str, actual: np.ndarray, expected: np.ndarray, tol: Tolerance) -> ParityResult:
    """Compare in float64; a shape mismatch or a non-finite value fails the check."""
    actual = np.asarray(actual)
    if actual.shape != expected.shape:
        return ParityResult(
            name, tol, ok=False, note=f"shape {actual.shape} != golden {expected.shape}"
        )
    diff = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    if not np.isfinite(diff).all():
        return ParityResult(name, tol, ok=False, note="non-finite values")
    max_abs = float(diff.max()) if diff.size else 0.0
    mean_abs = float(diff.mean()) if diff.size else 0.0
    frac_off = float((diff > tol.off).mean()) if diff.size else 0.0
    ok = tol.allows(max_abs, mean_abs, frac_off)
    return ParityResult(name, tol, max_abs, mean_abs, frac_off, ok)


def skipped(name: str, tol: Tolerance, reason: str) -> ParityResult:
    """A check that could not run (``ok`` None): not a pass, see ``all_ok``."""
    return ParityResult(name, tol, ok=None, note=reason)


# --- engines ------------------------------------------------------------------------------------


class ParityEngine:
    """An ``EngineSet`` seen by the checks: ``network(name)`` -> numpy callable or None.

    The callable takes numpy inputs in the network's ``ExportContract`` order and returns its
    outputs by contract name; ``None`` (the check is reported as skipped, with the reason in
    ``unavailable``) when the set cannot serve that network. ``split_generator``: the set
    serves the generator as its split pair (what a stream runs and what the default export
    holds), not as the whole network; see :meth:`generator`.
    """

    def __init__(self, engines: EngineSet, split_generator: bool = False) -> None:
        self.engines = engines
        self.name = engines.backend
        self.split_generator = split_generator
        self.unavailable: dict[str, str] = {}

    def network(self, name: str) -> NetworkFn | None:
        try:
            engine = self.engines.engine(name)
        except EngineUnavailable as exc:
            self.unavailable[name] = str(exc)
            return None

        def run(*inputs: np.ndarray) -> dict[str, np.ndarray]:
            return dict(engine.run(*inputs))

        return run

    def generator(self) -> Callable[[np.ndarray], FrameFn] | None:
        """``prepare(source_image) -> render(kp_source, kp_driving)``, or None if unavailable.

        With the split pair the source encoder runs once in ``prepare`` (batch 1) and each
        render call broadcasts its features over the keypoint batch, as a live session does;
        its outputs are the prediction only. The whole generator gives all four outputs."""
        if not self.split_generator:
            whole = self.network("generator")
            if whole is None:
                return None

            def prepare_whole(source: np.ndarray) -> FrameFn:
                def render(kp_source: np.ndarray, kp_driving: np.ndarray) -> Arrays:
                    batch = kp_driving.shape[0]
                    return whole(_rows(source, batch), kp_source, kp_driving)

                return render

            return prepare_whole
        encode, render_view = (self.network(name) for name in SPLIT_GENERATOR)
        if encode is None or render_view is None:
            return None

        def prepare_split(source: np.ndarray) -> FrameFn:
            features = encode(source)
            volume, compressed = features["source_volume"], features["source_compressed"]

            def render(kp_source: np.ndarray, kp_driving: np.ndarray) -> Arrays:
                batch = kp_driving.shape[0]
                return render_view(
                    _rows(volume, batch), _rows(compressed, batch), kp_source, kp_driving
                )

            return render

        return prepare_split

    @property
    def generator_label(self) -> str:
        return " + ".join(SPLIT_GENERATOR) if self.split_generator else "generator"


def _rows(array: np.ndarray, batch: int) -> np.ndarray:
    """``array`` with ``batch`` rows: as is, or its single row repeated."""
    if array.shape[0] == batch:
        return array
    if array.shape[0] != 1:
        raise ValueError(f"cannot broadcast a batch of {array.shape[0]} to {batch}")
    return np.repeat(array, batch, axis=0)


def with_split_generator(networks: Iterable[str]) -> list[str]:
    """``networks`` with the whole generator replaced by its split pair."""
    out: list[str] = []
    for name in networks:
        out.extend(SPLIT_GENERATOR if name == "generator" else (name,))
    return list(dict.fromkeys(out))


def make_engine(
    engine: str,
    checkpoints: str | Path | None,
    size: int,
    networks: Iterable[str],
    device: str = "cpu",
    generator: str = "auto",
) -> ParityEngine:
    """Open ``networks`` on backend ``engine``; an unusable backend is a one-line ConfigError.

    When the generator is asked for, ``generator`` picks its form: ``whole``, ``split`` (the
    source encoder + per-frame render pair), or ``auto``: the whole one on torch (it serves
    both; the whole one has the motion by-products to compare too) and the split pair on the
    exported backends (what a stream runs and what ``msadtalker export`` writes by default),
    each falling back to the other form when the set cannot open it (logged)."""
    if generator not in GENERATOR_FORMS:
        raise ConfigError(
            f"generator form must be one of {', '.join(GENERATOR_FORMS)}, got {generator!r}"
        )
    wanted = list(networks)
    whole, split = (wanted, False), (with_split_generator(wanted), True)
    if "generator" not in wanted or generator == "whole":
        candidates = [whole]
    elif generator == "split":
        candidates = [split]
    else:
        candidates = [whole, split] if engine == "torch" else [split, whole]
    first_error: EngineUnavailable | None = None
    for names, is_split in candidates:
        try:
            engines = open_engines(engine, checkpoints, size, names, device)
        except EngineUnavailable as exc:
            if first_error is None:
                first_error = exc
            log.info("%s: cannot open %s (%s)", engine, ", ".join(names), first_line(exc))
            continue
        if first_error is not None:
            log.info("%s: checking the generator as %s", engine, _form(is_split))
        return ParityEngine(engines, split_generator=is_split)
    raise ConfigError(f"--engine {engine}: {first_error}")


def _form(split: bool) -> str:
    return "its split pair " + " + ".join(SPLIT_GENERATOR) if split else "the whole generator"


# --- golden file --------------------------------------------------------------------------------


def _need(golden: Arrays, *keys: str) -> None:
    missing = [key for key in keys if key not in golden]
    if missing:
        raise KeyError(f"golden file lacks {', '.join(missing)}")


def render_size(golden: Arrays) -> int:
    """The render size S of the golden data (its source image is S x S)."""
    _need(golden, "source_image")
    return int(golden["source_image"].shape[-1])


def mapping_variants(golden: Arrays) -> list[tuple[str, int]]:
    """(golden prefix, coeff_nc) of every mapping net in the file, e.g. [("map70", 70), ...]."""
    variants = []
    for key in sorted(golden):
        match = re.fullmatch(r"(map\d+)_source_in", key)
        if match:
            variants.append((match.group(1), int(golden[key].shape[1])))
    return variants


# --- checks -------------------------------------------------------------------------------------

TOL_ALIGN = Tolerance(1e-6)
TOL_RECON = Tolerance(1e-5)
TOL_MEL = Tolerance(1e-6)
TOL_EXPNET = Tolerance(1e-4)
TOL_LOGITS = Tolerance(1e-4)
TOL_T_EXP = Tolerance(2e-5)
TOL_KEYPOINTS = Tolerance(1e-5)
TOL_KP_DETECTOR = Tolerance(5e-5)
TOL_MASK = Tolerance(2e-4)
TOL_OCCLUSION = Tolerance(1e-4)
TOL_DEFORMATION = Tolerance(1e-2, mean_abs=2e-5)
TOL_PREDICTION = Tolerance(2e-2, mean_abs=1e-4, frac_off=1e-3)
TOL_E2E = Tolerance(5e-2, mean_abs=2e-4, frac_off=5e-3)


def check_face_align(golden: Arrays) -> list[ParityResult]:
    """Alignment of the source PNG with the no-face fallback points -> recon input."""
    _need(golden, "input_source_png_uint8", "recon_input_224", "source_coeff_73")
    image = golden["input_source_png_uint8"]
    height, width = image.shape[:2]
    aligned = align_face(image, fallback_five_points(width, height))
    stored = golden["source_coeff_73"][0, 70:73]
    if not np.allclose(aligned.params, stored, rtol=0, atol=1e-4):
        return [
            skipped(
                "face_align", TOL_ALIGN, "golden alignment did not use the no-face fallback points"
            )
        ]
    expected = golden["recon_input_224"]
    result = compare("face_align", aligned.tensor().numpy(), expected, TOL_ALIGN)
    if result.ok or not knife_edge(width, height, aligned.scale):
        return [result]
    # The fallback points fit the standard ones exactly, so the resized side is a whole number
    # in exact arithmetic and the reference's truncation went by its rounding noise: both
    # outcomes are the reference's algorithm; report the one it took.
    sides = resize_sides(width, height, aligned.scale)
    width_edge, height_edge = (knife_edge(side, side, aligned.scale) for side in (width, height))
    truncated = (sides[0] - width_edge, sides[1] - height_edge)
    lower = align_face(image, fallback_five_points(width, height), truncated)
    other = compare("face_align", lower.tensor().numpy(), expected, TOL_ALIGN)
    if not other.ok:
        return [result]
    note = (
        f"knife edge: {width}x{aligned.scale:.9f} is a whole number of pixels; the reference's "
        f"rounding truncated to {truncated}, not {sides}"
    )
    return [dataclasses.replace(other, note=note)]


def check_face_recon(golden: Arrays, engine: ParityEngine) -> list[ParityResult]:
    _need(golden, "recon_input_224", "recon_coeffs_257", "source_coeff_73")
    run = engine.network("face_3drecon")
    if run is None:
        return [skipped("face_recon", TOL_RECON, f"{engine.name}: no face_3drecon")]
    coeffs = run(golden["recon_input_224"])["coeffs"]
    params = torch.from_numpy(golden["source_coeff_73"][:, 70:73])
    vector = coeffs_73(torch.from_numpy(coeffs), params).numpy()
    return [
        compare("face_recon", coeffs, golden["recon_coeffs_257"], TOL_RECON),
        compare("source_coeff_73", vector, golden["source_coeff_73"], TOL_RECON),
    ]


def check_mel(golden: Arrays) -> list[ParityResult]:
    _need(golden, "input_wav_loaded", "audio_mel_f64")
    from msadtalker.audio import log_mel  # the audio package imports PyAV: only when checked

    mel = np.asarray(log_mel(golden["input_wav_loaded"]))
    return [compare("mel", mel, golden["audio_mel_f64"], TOL_MEL)]


def check_expnet(golden: Arrays, engine: ParityEngine) -> list[ParityResult]:
    _need(golden, "expnet_in_mels", "expnet_in_ref", "expnet_in_ratio", "expnet_out_exp")
    run = engine.network("audio2exp")
    if run is None:
        return [skipped("expnet", TOL_EXPNET, f"{engine.name}: no audio2exp")]
    mels = golden["expnet_in_mels"]  # (B, T, 1, 80, 16)
    batch, frames = mels.shape[:2]
    mels = mels.reshape(batch * frames, *mels.shape[2:])
    ref = golden["expnet_in_ref"][..., :64].reshape(batch * frames, 64)
    ratio = golden["expnet_in_ratio"].reshape(batch * frames, 1)
    chunks = [
        run(mels[i : i + EXPNET_CHUNK], ref[i : i + EXPNET_CHUNK], ratio[i : i + EXPNET_CHUNK])
        for i in range(0, batch * frames, EXPNET_CHUNK)
    ]
    exp = np.concatenate([chunk["exp"] for chunk in chunks]).reshape(batch, frames, -1)
    return [compare("expnet", exp, golden["expnet_out_exp"], TOL_EXPNET)]


def _run_mapping_batched(run: NetworkFn, batched: np.ndarray, frames: int) -> dict[str, np.ndarray]:
    """Upstream order: step s feeds ``batched[:, s]`` (all rows); row r holds frames
    r * steps ... (r + 1) * steps - 1; outputs flattened row-major and cut to ``frames``."""
    steps = [run(batched[:, step]) for step in range(batched.shape[1])]
    return {
        key: np.stack([out[key] for out in steps], axis=1).reshape(-1, steps[0][key].shape[-1])[
            :frames
        ]
        for key in MAPPING_OUTPUTS
    }


def check_mapping(
    golden: Arrays, engine: ParityEngine, prefix: str, coeff_nc: int
) -> list[ParityResult]:
    name = f"mapping{coeff_nc}"
    keys = [
        f"{prefix}_{part}_out_{out}" for part in ("source", "target") for out in MAPPING_OUTPUTS
    ]
    _need(golden, f"{prefix}_source_in", f"{prefix}_target_in_batched", *keys)
    run = engine.network(mapping_network(coeff_nc))
    if run is None:
        reason = f"{engine.name}: no {mapping_network(coeff_nc)}"
        return [
            skipped(f"{name}_logits", TOL_LOGITS, reason),
            skipped(f"{name}_t_exp", TOL_T_EXP, reason),
        ]
    frames = golden[f"{prefix}_target_out_yaw"].shape[0]
    outputs = {
        "source": run(golden[f"{prefix}_source_in"]),
        "target": _run_mapping_batched(run, golden[f"{prefix}_target_in_batched"], frames),
    }

    def joined(outs: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        ours = [outputs[part][out].ravel() for part in outputs for out in outs]
        theirs = [golden[f"{prefix}_{part}_out_{out}"].ravel() for part in outputs for out in outs]
        return np.concatenate(ours), np.concatenate(theirs)

    return [
        compare(f"{name}_logits", *joined(("yaw", "pitch", "roll")), TOL_LOGITS),
        compare(f"{name}_t_exp", *joined(("t", "exp")), TOL_T_EXP),
    ]


def _mapping_output(values: Mapping[str, np.ndarray]) -> MappingOutput:
    return MappingOutput(
        *(torch.from_numpy(np.ascontiguousarray(values[k])) for k in MAPPING_OUTPUTS)
    )


def check_keypoints(golden: Arrays, prefix: str, coeff_nc: int) -> list[ParityResult]:
    """keypoint_transformation from the stored mapping outputs and canonical keypoints."""
    _need(golden, "kp_canonical", f"{prefix}_kp_source", f"{prefix}_kp_driving")
    kp = torch.from_numpy(golden["kp_canonical"])
    results = []
    ours, theirs = [], []
    for part, target in (("source", "kp_source"), ("target", "kp_driving")):
        motion = _mapping_output({k: golden[f"{prefix}_{part}_out_{k}"] for k in MAPPING_OUTPUTS})
        ours.append(keypoint_transformation(kp, motion).numpy().ravel())
        theirs.append(golden[f"{prefix}_{target}"].ravel())
    results.append(
        compare(f"keypoints{coeff_nc}", np.concatenate(ours), np.concatenate(theirs), TOL_KEYPOINTS)
    )
    return results


def check_kp_detector(golden: Arrays, engine: ParityEngine) -> list[ParityResult]:
    _need(golden, "source_image", "kp_canonical")
    run = engine.network("kp_extractor")
    if run is None:
        return [skipped("kp_detector", TOL_KP_DETECTOR, f"{engine.name}: no kp_extractor")]
    keypoints = run(golden["source_image"])["keypoints"]
    return [compare("kp_detector", keypoints, golden["kp_canonical"], TOL_KP_DETECTOR)]


_GENERATOR_CHECKS = (
    ("generator_mask", "mask", "gen_out_mask", TOL_MASK),
    ("generator_occlusion", "occlusion_map", "gen_out_occlusion_map", TOL_OCCLUSION),
    ("generator_deformation", "deformation", "gen_out_deformation", TOL_DEFORMATION),
    ("generator_prediction", "prediction", "gen_out_prediction", TOL_PREDICTION),
)


def check_generator(golden: Arrays, engine: ParityEngine) -> list[ParityResult]:
    """The golden generator call. The split pair has only the prediction as an output (the
    motion by-products stay inside its render graph), so it is judged on that one."""
    _need(
        golden,
        "source_image",
        "gen_kp_source",
        "gen_kp_driving",
        *(key for _, _, key, _ in _GENERATOR_CHECKS),
    )
    checks = _GENERATOR_CHECKS[-1:] if engine.split_generator else _GENERATOR_CHECKS
    prepare = engine.generator()
    if prepare is None:
        reason = f"{engine.name}: no {engine.generator_label}"
        return [skipped(name, tol, reason) for name, _, _, tol in checks]
    out = prepare(golden["source_image"])(golden["gen_kp_source"], golden["gen_kp_driving"])
    results = [compare(name, out[key], golden[ref], tol) for name, key, ref, tol in checks]
    if engine.split_generator:
        note = f"via {engine.generator_label}"
        results = [dataclasses.replace(r, note=r.note or note) for r in results]
    return results


def e2e_targets(golden: Arrays) -> list[tuple[str, int, int, int]]:
    """(golden key, batch row, first step, last step) of every ``e2e_frames_<a>_<b>`` array.

    Row r of the batched target holds frames r * steps ... (r + 1) * steps - 1.
    """
    _need(golden, "e2e_target_semantics")
    steps = golden["e2e_target_semantics"].shape[1]
    targets = []
    for key in sorted(golden):
        match = re.fullmatch(r"e2e_frames_(\d+)_(\d+)", key)
        if not match:
            continue
        first, last = int(match.group(1)), int(match.group(2))
        row = first // steps
        if last // steps != row or golden[key].shape[0] != last - first + 1:
            raise KeyError(f"golden {key}: frames do not lie in one batch row")
        targets.append((key, row, first - row * steps, last - row * steps))
    if not targets:
        raise KeyError("golden file has no e2e_frames_* arrays")
    return targets


def check_e2e(golden: Arrays, engine: ParityEngine) -> list[ParityResult]:
    """Upstream ``make_animation`` over the first steps of the batched target windows."""
    _need(golden, "source_image", "e2e_source_semantics", "e2e_target_semantics")
    targets = e2e_targets(golden)
    source_semantics = golden["e2e_source_semantics"]
    mapping_name = mapping_network(int(source_semantics.shape[1]))
    detect = engine.network("kp_extractor")
    mapping = engine.network(mapping_name)
    prepare = engine.generator()
    if detect is None or mapping is None or prepare is None:
        return [
            skipped(
                "e2e_frames",
                TOL_E2E,
                f"{engine.name}: needs kp_extractor, {mapping_name} and {engine.generator_label}",
            )
        ]
    batch = source_semantics.shape[0]
    source = np.repeat(golden["source_image"], batch, axis=0)
    render = prepare(golden["source_image"])  # per avatar, once
    kp_canonical = torch.from_numpy(detect(source)["keypoints"])
    kp_source = keypoint_transformation(kp_canonical, _mapping_output(mapping(source_semantics)))
    last_step = max(last for _, _, _, last in targets)
    frames = []
    for step in range(last_step + 1):
        motion = _mapping_output(mapping(golden["e2e_target_semantics"][:, step]))
        kp_driving = keypoint_transformation(kp_canonical, motion)
        frames.append(render(kp_source.numpy(), kp_driving.numpy())["prediction"])
    rendered = np.stack(frames, axis=1)  # (batch, steps, 3, S, S)
    ours = np.concatenate([rendered[row, first : last + 1] for _, row, first, last in targets])
    theirs = np.concatenate([golden[key] for key, _, _, _ in targets])
    return [compare("e2e_frames", ours, theirs, TOL_E2E)]


# --- driver -------------------------------------------------------------------------------------

CHECK_GROUPS = (
    "face_align",
    "face_recon",
    "mel",
    "expnet",
    "mapping",
    "keypoints",
    "kp_detector",
    "generator",
    "e2e",
)
# Engine networks each group needs (mapping nets are added from the golden file).
_GROUP_NETWORKS = {
    "face_recon": ("face_3drecon",),
    "expnet": ("audio2exp",),
    "kp_detector": ("kp_extractor",),
    "generator": ("generator",),
    "e2e": ("kp_extractor", "generator"),
}


def networks_for(golden: Arrays, groups: Iterable[str]) -> list[str]:
    """The engine networks the ``groups`` need (the generator by its whole name:
    :func:`make_engine` decides its form)."""
    groups = list(groups)
    networks = [net for group in groups for net in _GROUP_NETWORKS.get(group, ())]
    if "mapping" in groups:
        networks += [mapping_network(nc) for _, nc in mapping_variants(golden)]
    if "e2e" in groups and "e2e_source_semantics" in golden:
        networks.append(mapping_network(int(golden["e2e_source_semantics"].shape[1])))
    return list(dict.fromkeys(networks))


def _guarded(name: str, check: Callable[[], list[ParityResult]]) -> list[ParityResult]:
    """Run a check; a bug or a malformed golden fails that check instead of the whole run."""
    try:
        return check()
    except InputError:
        raise
    except Exception as exc:  # reported as a failed check, with its reason
        log.debug("check %s raised", name, exc_info=True)
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return [ParityResult(name, Tolerance(0.0), ok=False, note=f"error: {reason}")]


def run_checks(
    golden: Arrays, engine: ParityEngine, groups: Iterable[str] = CHECK_GROUPS
) -> list[ParityResult]:
    """Run the selected check groups in pipeline order; returns one result per compared item."""
    groups = [group for group in CHECK_GROUPS if group in set(groups)]
    results: list[ParityResult] = []
    for group in groups:
        if group == "face_align":
            results += _guarded(group, lambda: check_face_align(golden))
        elif group == "face_recon":
            results += _guarded(group, lambda: check_face_recon(golden, engine))
        elif group == "mel":
            results += _guarded(group, lambda: check_mel(golden))
        elif group == "expnet":
            results += _guarded(group, lambda: check_expnet(golden, engine))
        elif group in ("mapping", "keypoints"):
            for prefix, coeff_nc in mapping_variants(golden):
                if group == "mapping":
                    check = partial(check_mapping, golden, engine, prefix, coeff_nc)
                else:
                    check = partial(check_keypoints, golden, prefix, coeff_nc)
                results += _guarded(f"{group}{coeff_nc}", check)
        elif group == "kp_detector":
            results += _guarded(group, lambda: check_kp_detector(golden, engine))
        elif group == "generator":
            results += _guarded(group, lambda: check_generator(golden, engine))
        elif group == "e2e":
            results += _guarded(group, lambda: check_e2e(golden, engine))
    return results


def format_table(results: Sequence[ParityResult]) -> str:
    """Plain-text table: check, max |diff|, tolerance, mean |diff|, status."""
    rows = [("check", "max |diff|", "tolerance", "mean |diff|", "status")]
    for result in results:
        status = {True: "ok", False: "FAIL", None: "SKIPPED"}[result.ok]
        if result.note:
            status += f" ({result.note})"
        tol = f"{result.tolerance.atol:.0e}"
        if result.tolerance.mean_abs is not None:
            tol += f", mean {result.tolerance.mean_abs:.0e}"
        if result.tolerance.frac_off is not None:
            tol += f", <{result.tolerance.frac_off:.1%} >{result.tolerance.off:.0e}"
            if result.frac_off is not None:
                status += f" [{result.frac_off:.3%} >{result.tolerance.off:.0e}]"
        rows.append(
            (
                result.name,
                "-" if result.max_abs_diff is None else f"{result.max_abs_diff:.3e}",
                tol,
                "-" if result.mean_abs_diff is None else f"{result.mean_abs_diff:.3e}",
                status,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row[:4], widths, strict=True))
        + "  "
        + row[4]
        for row in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def results_json(results: Sequence[ParityResult]) -> dict[str, Any]:
    return {result.name: result.to_json() for result in results}


def all_ok(results: Sequence[ParityResult]) -> bool:
    """Every check ran and passed: a skipped check (``ok`` None) or no check at all is not OK."""
    return bool(results) and all(result.ok is True for result in results)
