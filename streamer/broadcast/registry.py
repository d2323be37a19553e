"""The output kinds a room can have, by name (``POST /rooms/{room}/outputs`` ``kind``).

A new kind: a module with an ``OutputKind`` (``streamer.broadcast.kinds``) and a line here.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from streamer.broadcast import record, rtmp, whip_publish
from streamer.broadcast.kinds import OutputKind

KINDS: Mapping[str, OutputKind] = MappingProxyType(
    {
        rtmp.KIND.name: rtmp.KIND,
        record.KIND.name: record.KIND,
        whip_publish.KIND.name: whip_publish.KIND,
    }
)
