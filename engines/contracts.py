"""Export contracts by network name, without loading any weights.

Backends that run exported files (onnxruntime, TensorRT) and the exporter itself need a
network's :class:`~msadtalker.models.contract.ExportContract` before (or instead of) building
the module: to name session inputs, to check a manifest, to derive TensorRT profiles. The
contract is read from the network class; MappingNet's depends on the instance (70 / 73 input
channels), so it is built on the meta device, which allocates nothing.

Names are the checkpoint network names of ``msadtalker.weights`` plus the generator's split
views ``generator_source_encoder`` (once per avatar) and ``generator_render`` (per frame).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import torch

from msadtalker.models.contract import ExportContract
from msadtalker.weights import LOADABLE_NETWORKS

# Views built on a loaded network: view name -> the checkpoint network it wraps.
VIEWS: Mapping[str, str] = MappingProxyType(
    {"generator_source_encoder": "generator", "generator_render": "generator"}
)
NETWORKS = (*LOADABLE_NETWORKS, *VIEWS)
# Networks whose graph depends on the render size (the others are size-independent).
SIZED_NETWORKS = frozenset({"kp_extractor", "generator", *VIEWS})


def base_network(network: str) -> str:
    """The checkpoint network that holds ``network``'s weights."""
    return VIEWS.get(network, network)


def contract_for(network: str, size: int) -> ExportContract:
    """The export contract of ``network`` at render size ``size``."""
    if network == "audio2exp":
        from msadtalker.models.expnet import ExpNet

        return ExpNet.export_contract()
    if network == "face_3drecon":
        from msadtalker.models.face_recon import FaceReconNet

        return FaceReconNet.export_contract()
    if network in ("mapping", "mapping_full"):
        from msadtalker.models.mapping import MappingNet

        with torch.device("meta"):
            mapping = MappingNet(70 if network == "mapping" else 73)
        return mapping.export_contract()
    if network == "kp_extractor":
        from msadtalker.models.kp_detector import KPDetector

        return KPDetector.export_contract(size)
    if network == "generator":
        from msadtalker.models.generator import OcclusionAwareSPADEGenerator

        return OcclusionAwareSPADEGenerator.export_contract(size)
    if network == "generator_source_encoder":
        from msadtalker.models.generator import SourceEncoder

        return SourceEncoder.export_contract(size)
    if network == "generator_render":
        from msadtalker.models.generator import FrameRenderer

        return FrameRenderer.export_contract(size)
    raise ValueError(f"unknown network {network!r}; known: {', '.join(NETWORKS)}")
