"""The live server: aiohttp signalling + aiortc media around ``LiveSession``.

Routes::

    GET  /                                  publisher page (mic -> avatar)   web/index.html
    GET  /viewer?room=ID                    watch-only page                  web/viewer.html
    GET  /static/...                        page assets                      web/
    POST /offer                             {"sdp", "type": "offer", "role"?, "room"?} -> answer
    GET  /sessions/{session_id}             live figures of a session (JSON)
    POST /sessions/{session_id}/interrupt   barge-in: buffered audio cleared, avatar to rest
    DELETE /sessions/{session_id}           hang up
    GET  /healthz                           liveness: 200 while the process answers
    GET  /readyz                            200 while new sessions are accepted, 503 + reason
    GET  /metrics                           Prometheus metrics (all workers in one scrape)
    GET  /avatar.jpg                        the avatar at rest (shown before the pages connect)
    POST /whip/{room}                       WHIP ingest: application/sdp offer -> 201 + answer
    POST /whep/{room}                       WHEP egress: application/sdp offer -> 201 + answer
    DELETE /whip/resource/{session_id}      ends a WHIP session (``/whep/resource/...``: WHEP)
    GET  /ice-servers                       {"iceServers": [...]} for the pages (STUN, TURN)
    POST /rooms/{room}/outputs              {"kind": "rtmp", "url"} / {"kind": "record"} -> 201
    GET  /rooms/{room}/outputs[/{id}]       a room's outputs: state, frames, reconnects
    DELETE /rooms/{room}/outputs/{id}       stop one (a recording is finalised)

A publisher offer carries the mic (audio, sendrecv or sendonly) and receives the avatar video
(and, with sendrecv audio, the delayed speech). It opens a room (``room`` names it, otherwise a
random id). A viewer offer (``"role": "viewer"``, ``room`` required) only receives. Every error
is a 4xx/5xx with a JSON body ``{"error": ..., "status": ...}``.

Limits (``ServerConfig``, ``limits``): sessions, rooms and viewers (503 + ``Retry-After``
beyond), each client's offers a minute and offers still connecting (429), SDP and body sizes,
slow requests and connections per client on the public port (``connections``); with several
workers they are each worker's, and ``/healthz`` and ``/readyz`` answer for the worker alone.

Package map (one job per module):

==================  ==========================================================================
``app``             ``make_app``: the route table, middlewares, start-up and shutdown hooks
``state``           ``ServerState`` (under the typed app key ``STATE``) and ``Peer``
``offers``          ``parse_offer``: body + SDP checks, a pure function -> ``Offer``
``errors``          the JSON error middleware, ``RequestError``, ``error_response``
``clients``         who the client of a request is (address, trusted proxies), its budgets
``limits``          per-client offer budgets, offers still connecting, capacity: 429 / 503
``connections``     the public port's guard: slow requests, connections per client
``ratelimit``       ``RateLimiter``: a token bucket per key, in bounded memory
``auth``            bearer tokens and signed room tokens -> ``Credential`` (no aiohttp)
``access``          who may do what over HTTP: the auth middleware, offers, session owners
``security``        security headers (CSP, ...), CORS, the ``/static`` files
``handlers``        the request handlers (offer, health, poster, stats, interrupt, hang-up, pages)
``metrics``         Prometheus metrics: one registry per app, the workers' scrapes merged
``peers``           peer lifecycle: negotiate, outputs, watch, ``close_peer``, ``drain``
``ice``             ICE servers (STUN, TURN, TURN REST credentials) for peers, pages, clients
``wish_offers``     ``parse_wish_offer``: WHIP/WHEP SDP checks, a pure function -> ``Offer``
``wish``            what WHIP and WHEP share over HTTP (201, resources, OPTIONS, ICE route)
``whip``, ``whep``  WHIP ingest (a publisher) and WHEP egress (a viewer) routes
``outputs``         a room's outputs (RTMP push, recording: ``streamer.broadcast``) routes
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
