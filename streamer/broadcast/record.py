"""Output kind ``record``: the room as an mp4 file in ``[broadcast] record_dir``
(``{"kind": "record"}``; the server names the file, a client never picks a path).

Fragmented MP4 from the same encoder as the RTMP push; finalised when it is stopped, when its
room ends and when the server drains (SIGTERM): the encoder process writes the trailer once
its input ends, whatever happens to the server. Not retried: a recording that failed
(disk full) says so in its state.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from streamer.broadcast.kinds import OutputContext, OutputPlan
from streamer.broadcast.output import EncodedOutput
from streamer.broadcast.settings import encoder_settings
from streamer.broadcast.targets import OutputTargetError, recording_path
from streamer.config import BroadcastConfig


class RecordKind:
    name = "record"

    def plan(self, body: Mapping[str, Any], room: str, config: BroadcastConfig) -> OutputPlan:
        unexpected = sorted(set(body) - {"kind"})
        if unexpected:
            raise OutputTargetError(
                f"a recording takes no {', '.join(unexpected)}: the server names the file"
            )
        return OutputPlan(kind=self.name, target="", shown="")

    def start(self, plan: OutputPlan, context: OutputContext) -> EncodedOutput:
        directory = Path(context.config.record_dir)
        directory.mkdir(parents=True, exist_ok=True)
        path = recording_path(directory, context.room, context.output_id)
        output = EncodedOutput(
            context.output_id,
            self.name,
            context.room,
            path.name,
            encoder_settings(context.config, str(path), "mp4"),
            context.session.subscribe(f"output-{context.output_id}", context.config.queue_frames),
            context.config,
            backoff=None,
            extra={"file": path.name},
        )
        output.start()
        return output


KIND = RecordKind()
