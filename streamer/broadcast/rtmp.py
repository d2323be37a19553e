"""Output kind ``rtmp``: push a room to an RTMP(S) ingest (``{"kind": "rtmp", "url": ...}``).

FLV over ``rtmp://`` or ``rtmps://`` (TLS), H.264 + AAC (``streamer.broadcast.encoder``),
reconnecting with back-off when the far end refuses, drops or hangs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from streamer.broadcast.encoder import EncoderSettings
from streamer.broadcast.kinds import OutputContext, OutputPlan
from streamer.broadcast.output import Backoff, EncodedOutput
from streamer.broadcast.settings import encoder_settings
from streamer.broadcast.targets import OutputTargetError, check_rtmp_url, redact
from streamer.config import BroadcastConfig


class RtmpKind:
    name = "rtmp"

    def plan(self, body: Mapping[str, Any], room: str, config: BroadcastConfig) -> OutputPlan:
        url = body.get("url")
        if not isinstance(url, str):
            raise OutputTargetError("url: an rtmp:// or rtmps:// URL is required")
        check_rtmp_url(url)
        return OutputPlan(kind=self.name, target=url, shown=redact(url))

    def start(self, plan: OutputPlan, context: OutputContext) -> EncodedOutput:
        settings: EncoderSettings = encoder_settings(context.config, plan.target, "flv")
        output = EncodedOutput(
            context.output_id,
            self.name,
            context.room,
            plan.shown,
            settings,
            context.session.subscribe(f"output-{context.output_id}", context.config.queue_frames),
            context.config,
            Backoff.of(context.config),
        )
        output.start()
        return output


KIND = RtmpKind()
