"""The live server: aiohttp signalling + aiortc media around ``LiveSession``.

Routes::

    GET  /                                  publisher page (mic -> avatar)   web/index.html
    GET  /viewer?room=ID                    watch-only page                  web/viewer.html
    GET  /static/...                        page assets                      web/
    POST /offer                             {"sdp", "type": "offer", "role"?, "room"?} -> answer
    GET  /sessions/{session_id}             live figures of a session (JSON)
    POST /sessions/{session_id}/interrupt   barge-in: buffered audio cleared, avatar to rest
    DELETE /sessions/{session_id}           hang up
    GET  /healthz                           200 while sessions are accepted, 503 draining/full
    GET  /avatar.jpg                        the avatar at rest (shown before the pages connect)

A publisher offer carries the mic (audio, sendrecv or sendonly) and receives the avatar video
(and, with sendrecv audio, the delayed speech). It opens a room (``room`` names it, otherwise a
random id). A viewer offer (``"role": "viewer"``, ``room`` required) only receives. Every error
is a 4xx/5xx with a JSON body ``{"error": ..., "status": ...}``.

Limits (``ServerConfig``): ``max_sessions`` peer connections in all (offers being negotiated
or placed included), ``max_viewers_per_room``, ``max_sdp_bytes``; with several workers they
are each worker's, and ``/healthz`` answers for the worker alone.

Package map (one job per module):

==================  ==========================================================================
``app``             ``make_app``: the route table, middlewares, start-up and shutdown hooks
``state``           ``ServerState`` (under the typed app key ``STATE``) and ``Peer``
``offers``          ``parse_offer``: body + SDP checks, a pure function -> ``Offer``
``errors``          the JSON error middleware, ``RequestError``, ``error_response``
``handlers``        the request handlers (offer, health, poster, stats, interrupt, hang-up, pages)
``peers``           peer lifecycle: negotiate, outputs, watch, ``close_peer``, ``drain``
``poster``          ``/avatar.jpg``: the avatar at rest, rendered once by the pipeline
``rooms``           rooms: one publisher, any number of viewers
``forwarding``      several workers: one middleware relays requests to the owning worker
``cluster``         which worker owns an id; the ``Forwarder`` that relays and places
``supervisor``      the parent of ``serve --workers N``: spawns, watches, stops the workers
``run``             the run loop (``serve``, ``serve_worker``, ``run_async``): bind, drain, exit
==================  ==========================================================================

Nothing is re-exported here: import from the module that does the job (``make_app`` from
``streamer.server.app``, ``serve`` from ``streamer.server.run``), so that ``offers`` or
``cluster`` can be imported without the rest.
"""
