"""The generator behind Triton with per-avatar state kept on the server: ``generator_session``.

A session must not send the avatar's source features (the encoder's volume and its
compression, ~8.4 MB at 256²) with every frame. This model keeps them on the server, keyed by
avatar id, in a bounded least-recently-used table:

* a request carries ``avatar_id`` (one string per row) and the keypoints ``kp_source`` /
  ``kp_driving``; the first request of an avatar also carries its ``source_image`` (an optional
  input), which the model encodes once with ``generator_source_encoder`` and keeps;
* every request of a batch is rendered in one ``generator_render`` call over all their rows
  (Triton's dynamic batcher gathers requests of several sessions into one ``execute``);
* an avatar the table does not hold (never sent, evicted, server restarted) is answered with
  an error starting with ``UNKNOWN_AVATAR_PREFIX``; the client then sends the image again.

The file is self-contained (numpy only): ``msadtalker export --format triton`` copies it into
the model repository as ``generator_session/1/model.py`` for Triton's Python backend, where
:class:`TritonPythonModel` calls the two ONNX models through Triton's BLS API, so the features
stay in the server's memory (on its GPU with the GPU ONNX models). The test server
(tests/triton_server.py, PyTriton) runs the same :class:`AvatarSessions` with onnxruntime
sessions in place of BLS. Why not Triton's implicit sequence state: it needs the state as
extra inputs/outputs of the ONNX graph and one sequence per session, while the avatar table is
shared by every session of an avatar.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

UNKNOWN_AVATAR_PREFIX = "UNKNOWN_AVATAR"
FEATURES = ("source_volume", "source_compressed")
DEFAULT_CAPACITY = 64

Encode = Callable[[np.ndarray], Mapping[str, np.ndarray]]
Render = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


class UnknownAvatar(KeyError):
    """The avatar's features are not on the server: the client must send its image."""

    def __init__(self, avatar_id: str) -> None:
        super().__init__(avatar_id)
        self.avatar_id = avatar_id

    def __str__(self) -> str:
        return f"{UNKNOWN_AVATAR_PREFIX}: {self.avatar_id} (send source_image with this request)"


class AvatarSessions:
    """Per-avatar features (bounded LRU) and batched rendering; see the module docstring.

    ``encode(image (1, 3, S, S)) -> {source_volume, source_compressed}`` (batch 1) and
    ``render(volume, compressed, kp_source, kp_driving) -> prediction`` (equal batches) are
    the two networks, however the host runs them."""

    def __init__(self, encode: Encode, render: Render, capacity: int = DEFAULT_CAPACITY) -> None:
        self._encode = encode
        self._render = render
        self.capacity = max(1, capacity)
        self._features: OrderedDict[str, tuple[np.ndarray, ...]] = OrderedDict()
        self._lock = threading.Lock()
        self.encoded = 0  # how many images were encoded (not taken from the table)

    def __contains__(self, avatar_id: str) -> bool:
        with self._lock:
            return avatar_id in self._features

    def remember(self, avatar_id: str, image: np.ndarray) -> None:
        """Encode ``image`` (one avatar, batch 1) and keep its features under ``avatar_id``."""
        outputs = self._encode(np.ascontiguousarray(image[:1], dtype=np.float32))
        features = tuple(np.asarray(outputs[name]) for name in FEATURES)
        with self._lock:
            self.encoded += 1
            self._features[avatar_id] = features
            self._features.move_to_end(avatar_id)
            while len(self._features) > self.capacity:
                self._features.popitem(last=False)

    def features(self, avatar_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(volume, compressed) with one row per id; :class:`UnknownAvatar` for a missing one."""
        with self._lock:
            rows = []
            for avatar_id in avatar_ids:
                found = self._features.get(avatar_id)
                if found is None:
                    raise UnknownAvatar(avatar_id)
                self._features.move_to_end(avatar_id)
                rows.append(found)
        volume = np.concatenate([row[0] for row in rows])
        compressed = np.concatenate([row[1] for row in rows])
        return volume, compressed

    def render_batch(self, requests: Sequence[Mapping[str, np.ndarray]]) -> list[Any]:
        """One result per request: ``{"prediction": rows}`` or the exception for that request.

        Requests that carry ``source_image`` are remembered first; the requests whose avatars
        are all known are rendered together in one call."""
        results: list[Any] = [None] * len(requests)
        ready: list[tuple[int, list[str]]] = []
        for index, request in enumerate(requests):
            try:
                ids = decode_ids(request["avatar_id"])
                image = request.get("source_image")
                if image is not None and len(image) and ids[0] not in self:
                    self.remember(ids[0], image)  # first sessions of an avatar all send it
                self.features(ids)  # raises UnknownAvatar early, per request
                ready.append((index, ids))
            except Exception as exc:  # this request's own failure, reported to its caller
                results[index] = exc
        if not ready:
            return results
        ids = [avatar for _, row_ids in ready for avatar in row_ids]
        volume, compressed = self.features(ids)
        kp_source = np.concatenate([requests[i]["kp_source"] for i, _ in ready])
        kp_driving = np.concatenate([requests[i]["kp_driving"] for i, _ in ready])
        try:
            prediction = self._render(volume, compressed, kp_source, kp_driving)
        except Exception as exc:  # the whole batch failed: every caller gets the reason
            for index, _ in ready:
                results[index] = exc
            return results
        start = 0
        for index, row_ids in ready:
            results[index] = {"prediction": prediction[start : start + len(row_ids)]}
            start += len(row_ids)
        return results


def decode_ids(values: np.ndarray) -> list[str]:
    """Triton BYTES tensor (N,) or (N, 1) -> N avatar ids."""
    flat = np.asarray(values).reshape(-1)
    return [v.decode() if isinstance(v, bytes | np.bytes_) else str(v) for v in flat]


class TritonPythonModel:
    """Triton Python backend entry point (only inside ``tritonserver``; unverified here: the
    PyTriton server of the tests has no ONNX backend to call)."""

    def initialize(self, args: dict[str, Any]) -> None:
        import triton_python_backend_utils as pb_utils

        self._pb = pb_utils
        config = json.loads(args["model_config"])
        parameters = config.get("parameters", {})
        capacity = int(parameters.get("avatar_capacity", {}).get("string_value", DEFAULT_CAPACITY))
        self._sessions = AvatarSessions(self._encode, self._render, capacity)

    def _call(self, model: str, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]) -> Any:
        pb = self._pb
        request = pb.InferenceRequest(
            model_name=model,
            requested_output_names=list(outputs),
            inputs=[pb.Tensor(name, value) for name, value in inputs.items()],
        )
        response = request.exec()
        if response.has_error():
            raise RuntimeError(f"{model}: {response.error().message()}")
        return response

    def _encode(self, image: np.ndarray) -> dict[str, np.ndarray]:
        response = self._call("generator_source_encoder", {"source_image": image}, FEATURES)
        return {
            name: self._pb.get_output_tensor_by_name(response, name).as_numpy() for name in FEATURES
        }

    def _render(self, *arrays: np.ndarray) -> np.ndarray:
        names = ("source_volume", "source_compressed", "kp_source", "kp_driving")
        response = self._call(
            "generator_render", dict(zip(names, arrays, strict=True)), ["prediction"]
        )
        prediction: np.ndarray = self._pb.get_output_tensor_by_name(
            response, "prediction"
        ).as_numpy()
        return prediction

    def execute(self, requests: list[Any]) -> list[Any]:
        pb = self._pb
        arrays = []
        for request in requests:
            entry = {
                name: pb.get_input_tensor_by_name(request, name).as_numpy()
                for name in ("avatar_id", "kp_source", "kp_driving")
            }
            image = pb.get_input_tensor_by_name(request, "source_image")
            if image is not None:
                entry["source_image"] = image.as_numpy()
            arrays.append(entry)
        responses = []
        for result in self._sessions.render_batch(arrays):
            if isinstance(result, Exception):
                responses.append(pb.InferenceResponse(error=pb.TritonError(str(result))))
            else:
                tensor = pb.Tensor("prediction", result["prediction"])
                responses.append(pb.InferenceResponse(output_tensors=[tensor]))
        return responses
