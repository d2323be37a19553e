"""Export contracts by network name, without loading any weights.

Backends that run exported files (onnxruntime, TensorRT) and the exporter itself need a
network's :class:`~msadtalker.models.contract.ExportContract` before (or instead of) building
the module: to name session inputs, to check a manifest, to derive TensorRT profiles. The
contract is read from the network class; MappingNet's depends on the instance (70 / 73 input
channels), so it is built on the meta device, which allocates nothing.

Names are those of ``msadtalker.catalog.NETWORKS``: the checkpoint networks plus the
generator's split views ``generator_source_encoder`` (once per avatar) and
``generator_render`` (per frame). Each network module is imported only when its contract is
asked for.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

import torch

from msadtalker.catalog import COEFF_NC, NETWORKS, SIZED_NETWORKS, VIEWS, base_network
from msadtalker.models.contract import ExportContract

__all__ = ["NETWORKS", "SIZED_NETWORKS", "VIEWS", "base_network", "contract_for"]


def _expnet(size: int) -> ExportContract:
    from msadtalker.models.expnet import ExpNet

    return ExpNet.export_contract()


def _face_recon(size: int) -> ExportContract:
    from msadtalker.models.face_recon import FaceReconNet

    return FaceReconNet.export_contract()


def _mapping(network: str) -> Callable[[int], ExportContract]:
    def contract(size: int) -> ExportContract:
        from msadtalker.models.mapping import MappingNet

        with torch.device("meta"):
            mapping = MappingNet(COEFF_NC[network])
        return mapping.export_contract()

    return contract


def _kp_detector(size: int) -> ExportContract:
    from msadtalker.models.kp_detector import KPDetector

    return KPDetector.export_contract(size)


def _generator(size: int) -> ExportContract:
    from msadtalker.models.generator import OcclusionAwareSPADEGenerator

    return OcclusionAwareSPADEGenerator.export_contract(size)


def _source_encoder(size: int) -> ExportContract:
    from msadtalker.models.generator import SourceEncoder

    return SourceEncoder.export_contract(size)


def _frame_renderer(size: int) -> ExportContract:
    from msadtalker.models.generator import FrameRenderer

    return FrameRenderer.export_contract(size)


# network -> its contract at a render size
CONTRACTS: Mapping[str, Callable[[int], ExportContract]] = MappingProxyType(
    {
        "audio2exp": _expnet,
        "face_3drecon": _face_recon,
        **{network: _mapping(network) for network in COEFF_NC},
        "kp_extractor": _kp_detector,
        "generator": _generator,
        "generator_source_encoder": _source_encoder,
        "generator_render": _frame_renderer,
    }
)


def contract_for(network: str, size: int) -> ExportContract:
    """The export contract of ``network`` at render size ``size``."""
    try:
        contract = CONTRACTS[network]
    except KeyError:
        raise ValueError(f"unknown network {network!r}; known: {', '.join(NETWORKS)}") from None
    return contract(size)
