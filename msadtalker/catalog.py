"""Names of the SadTalker networks and of the files their weights come from. No torch.

One place for every network name, checkpoint file name and render-size / coefficient count
pairing, so that the loader (``msadtalker.weights``), the engines, the exporter, the stage
factories and the command line (whose ``--help`` must not import torch) read them instead of
keeping copies. It imports nothing but the standard library.

The official release (OpenTalker/SadTalker, ``src/utils/init_path.py`` and
``src/utils/safetensor_helper.py``): one ``SadTalker_V0.0.2_<S>.safetensors`` per render size S
holds five networks, each under its name as key prefix; the two MappingNets are separate
``torch.save`` files with their state dict under the key ``"mapping"``: 70 coefficients for the
crop / extcrop / resize preprocess modes (``src/config/facerender.yaml``), 73 for full / extfull
(``src/config/facerender_still.yaml``).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

CHECKPOINTS_ENV = "MSADTALKER_CHECKPOINTS"
RENDER_SIZES = (256, 512)

# --- checkpoint networks --------------------------------------------------------------------

# In the safetensors file, in the official key order; a key belongs to the network whose name
# it contains (the official loader's rule).
SAFETENSORS_NETWORKS = ("kp_extractor", "generator", "audio2exp", "audio2pose", "face_3drecon")
MAPPING_FILES: Mapping[str, str] = MappingProxyType(
    {
        "mapping": "mapping_00229-model.pth.tar",
        "mapping_full": "mapping_00109-model.pth.tar",
    }
)
MAPPING_STATE_KEY = "mapping"  # torch.load(file)["mapping"]
# Input coefficients of each mapping network: [exp 64 | angles 3 | trans 3] (+ the source's
# alignment s, tx, ty).
COEFF_NC: Mapping[str, int] = MappingProxyType({"mapping": 70, "mapping_full": 73})
MAPPING_FOR_PREPROCESS: Mapping[str, str] = MappingProxyType(
    {
        "crop": "mapping",
        "extcrop": "mapping",
        "resize": "mapping",
        "full": "mapping_full",
        "extfull": "mapping_full",
    }
)
# Our render modes (``render.mode``) are the official crop and full.
MAPPING_FOR_MODE: Mapping[str, str] = MappingProxyType(
    {mode: MAPPING_FOR_PREPROCESS[mode] for mode in ("crop", "full")}
)
# Stored in the release but not used by MSadTalker: checked, then not loaded.
SKIPPED_NETWORKS: Mapping[str, str] = MappingProxyType(
    {"audio2pose": "PoseVAE, replaced by the cosine head-pose generator"}
)
LOADABLE_NETWORKS = (
    *(name for name in SAFETENSORS_NETWORKS if name not in SKIPPED_NETWORKS),
    *MAPPING_FILES,
)
# Files of the --old_version release; recognised only to explain that they are not read.
LEGACY_FILES = (
    "facevid2vid_00189-model.pth.tar",
    "auido2exp_00300-model.pth",
    "auido2pose_00140-model.pth",
    "epoch_20.pth",
)

# --- what the engines serve -----------------------------------------------------------------

# The generator's split views: the source encoder (once per avatar) and the per-frame renderer,
# both built on the one loaded generator.
VIEWS: Mapping[str, str] = MappingProxyType(
    {"generator_source_encoder": "generator", "generator_render": "generator"}
)
NETWORKS = (*LOADABLE_NETWORKS, *VIEWS)
# Networks whose graph depends on the render size (the others are size-independent).
SIZED_NETWORKS = frozenset({"kp_extractor", "generator", *VIEWS})

# The neural path: the source and lip networks (plus the render mode's mapping network) and the
# renderer's views.
MOTION_NETWORKS = ("face_3drecon", "audio2exp", "kp_extractor")
RENDER_NETWORKS = ("generator_source_encoder", "generator_render")
# Everything a stream of either render mode runs; what ``msadtalker export`` exports by default.
STREAMING_NETWORKS = (*MOTION_NETWORKS, *MAPPING_FILES, *RENDER_NETWORKS)


def safetensors_file(size: int) -> str:
    """The official safetensors file of render size ``size``."""
    return f"SadTalker_V0.0.2_{size}.safetensors"


def base_network(network: str) -> str:
    """The checkpoint network that holds ``network``'s weights."""
    return VIEWS.get(network, network)


def checkpoint_file(network: str, size: int) -> str:
    """The file ``network``'s weights come from at render size ``size``."""
    base = base_network(network)
    if base in MAPPING_FILES:
        return MAPPING_FILES[base]
    if base in SAFETENSORS_NETWORKS:
        return safetensors_file(size)
    raise ValueError(f"unknown network {network!r}; known: {', '.join(NETWORKS)}")


def mapping_network(coeff_nc: int) -> str:
    """The mapping network that takes ``coeff_nc`` coefficients."""
    for name, count in COEFF_NC.items():
        if count == coeff_nc:
            return name
    raise ValueError(f"coeff_nc must be one of {tuple(COEFF_NC.values())}, got {coeff_nc}")


def mapping_for_mode(mode: str) -> tuple[str, int]:
    """(mapping network, coefficient count) of a render mode, as the official code pairs them."""
    try:
        name = MAPPING_FOR_MODE[mode]
    except KeyError:
        modes = " or ".join(repr(m) for m in MAPPING_FOR_MODE)
        raise ValueError(f"render mode must be {modes}, got {mode!r}") from None
    return name, COEFF_NC[name]
