"""A room's encoded outputs: RTMP(S) pushes, mp4 recordings (and WHIP publishing to an SFU).

Every output reads its room's session through a bounded drop-oldest subscription
(``LiveSession.subscribe``), so nothing an output does can stall the live path; its work runs
elsewhere (an encoder process, a peer connection). ``RoomOutputs`` keeps every room's
outputs; the HTTP API is ``streamer.server.outputs``; settings are ``[broadcast]``
(``streamer.config.BroadcastConfig``).

Package map (one job per module):

=================  ===========================================================================
``kinds``          ``OutputKind`` / ``Output`` / ``OutputPlan``: what a kind of output provides
``registry``       ``KINDS``: the kinds by name (a new kind is a module and a line there)
``rtmp``           kind ``rtmp``: push to an ``rtmp://`` / ``rtmps://`` ingest, reconnecting
``record``         kind ``record``: fragmented mp4 in ``record_dir``, finalised on every end
``whip_publish``   kind ``whip``: publish the room to an SFU's WHIP ingest (an aiortc peer)
``output``         ``EncodedOutput``: subscription -> encoder process, states, back-off, counts
``process``        the server's side of an encoder process (spawn, feed without waiting, kill)
``child``          the encoder process itself (``python -m streamer.broadcast.child``)
``encoder``        ``FrameEncoder``: H.264 + AAC with PyAV, timestamps from frame indices
``wire``           the frames and reports between the server and an encoder process
``settings``       ``[broadcast]`` -> ``EncoderSettings``
``targets``        RTMP URL checks, ``redact`` (stream keys never shown), recording file names
``room_outputs``   ``RoomOutputs``: every room's outputs, defaults, drain
``metrics``        Prometheus figures of the outputs, read at scrape time
=================  ===========================================================================
"""
