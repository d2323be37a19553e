"""How the neural path runs a network: ``run(network, *inputs) -> outputs by name``.

Inputs are positional in the network's ``ExportContract`` order (numpy arrays, or the tensors
a previous call returned with ``keep_on_device``); outputs are numpy arrays by contract name
unless ``keep_on_device``. The pipeline builds one from an ``engines`` EngineSet
(``streamer.assembly.neural``); tests may pass any callable with this shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol


class NetworkRunner(Protocol):
    def __call__(
        self, network: str, *inputs: Any, keep_on_device: bool = False
    ) -> Mapping[str, Any]: ...
