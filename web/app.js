// msadtalker live pages: the publisher (mic -> avatar) and the viewer (watch only).
// Plain browser JavaScript, no build step. The page state is exposed as window.msadtalker so
// that people (devtools) and tests (playwright) can read the same figures the page shows.
// An access token (when the server wants one) comes from ?token= or the token field; it is
// kept in this closure only (never in window.msadtalker, storage or the address bar) and sent
// as "Authorization: Bearer" on every call.
"use strict";

(() => {
  const role = document.body.dataset.role === "viewer" ? "viewer" : "publisher";
  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(location.search);
  const video = $("avatar");
  const bench = window.msadtalkerBench || null;

  // The token leaves the address bar (history, bookmarks, screen shares) at once.
  let token = params.get("token");
  if (params.has("token")) {
    params.delete("token");
    const query = params.toString();
    history.replaceState(null, "", location.pathname + (query ? `?${query}` : "") + location.hash);
  }

  function authorized(headers) {
    const all = Object.assign({}, headers || {});
    if (token) all.Authorization = `Bearer ${token}`;
    return all;
  }

  function askForToken(message) {
    // The server wants a (different) token: a field, so the next Start uses what is pasted.
    const box = $("token-box");
    if (box) {
      box.hidden = false;
      $("token").focus();
    }
    return new Error(`${message}: paste an access token and press ${$("start").textContent}`);
  }

  const poster = $("poster");
  const hidePoster = () => { poster.hidden = true; };
  poster.addEventListener("error", hidePoster);
  if (poster.complete && !poster.naturalWidth) hidePoster();

  const state = {
    role,
    status: "idle",
    error: null,
    sessionId: null,
    room: params.get("room"),
    framesPresented: 0,
    fps: 0,
    latencyMs: null,
    server: null,
    notice: null,
    ended: null, // why the last session ended, when it was not this page's own Stop
    listening: false,
    // Lip sync by the page (web/avsync.js): the lips' measured lead over the voice and the
    // holds it set (ms); null while the browser's own sync is used (?avsync=browser).
    avSync: null,
    retryDelayMs: null, // the wait before the next reconnection attempt (back-off)
    pollDelayMs: null, // the wait before the next figures request (back-off on failures)
    // Current video frame as a PNG data URL (tests read pixels through this).
    grab() {
      if (!video.videoWidth) return null;
      const canvas = document.createElement("canvas");
      canvas.width = video.videoWidth;
      canvas.height = video.videoHeight;
      canvas.getContext("2d").drawImage(video, 0, 0);
      return canvas.toDataURL("image/png");
    },
  };
  window.msadtalker = state;

  let pc = null;
  let mic = null;
  let pollTimer = null;
  let watchTimer = null;
  let retryTimer = null;
  let retries = 0; // reconnection attempts since the last good session (back-off)
  let pollFailures = 0;
  let lastFrameAt = 0; // page clock of the last presented frame
  let hiddenSince = null;
  let avTimer = null;
  let avSync = null;
  let lastShown = null; // the last picture presented: {at: epoch ms, rtp: its RTP timestamp}
  let playoutTotals = null; // the media-playout stats' running totals at the last reading
  let outputMs = 0; // the audio device's delay
  let lags = {}; // the last reading: picture and voice behind the mic (ms)
  const receivers = {}; // kind -> the RTCRtpReceiver of this session
  const presentedAt = [];
  const held = []; // [page ms, ms a frame waited in this browser: received -> presented]
  const POLL_MS = 500;
  const MIC_PTIME_MS = params.has("ptime") ? Number(params.get("ptime")) : 10;
  const STALL_MS = 1000; // no frame for this long while visible: the page says so
  const AV_READ_MS = 250;
  // Lip sync by this page where it can read and hold both tracks (web/avsync.js); else, or
  // with ?avsync=browser (the bench's "before"), voice and lips in one stream, lined up by
  // the browser.
  const PAGE_SYNC = params.get("avsync") !== "browser" && "MsadtalkerAvSync" in window
    && "requestVideoFrameCallback" in HTMLVideoElement.prototype
    && "getSynchronizationSources" in RTCRtpReceiver.prototype
    && "jitterBufferTarget" in RTCRtpReceiver.prototype;
  const LEAD_MS = Number.isFinite(Number(params.get("lead") ?? "x")) ? Number(params.get("lead")) : undefined;
  const RETRY_MS = [1000, 2000, 4000, 8000, 15000];
  // Endings worth a new try (the server went away or restarted, the network failed); the
  // others (idle, too long, the audio ended) need the person.
  const RETRIED = new Set(["drain", "vanished", "connection_failed", "connection_closed",
    "room_closed", "unreachable", "closed"]);

  // The publisher's own voice comes back ~150 ms late, which makes people stumble: off by
  // default, with a control to listen. Viewers hear it (in sync with the lips, see avsync.js).
  state.listening = role !== "publisher" || params.get("listen") === "1";
  video.muted = !state.listening;
  function showListening() {
    const button = $("listen");
    if (!button) return;
    button.setAttribute("aria-pressed", String(state.listening));
    button.textContent = state.listening ? "Mute voice" : "Listen";
  }
  showListening();

  if ($("room-name")) $("room-name").textContent = state.room || "?";

  function setStatus(text) {
    state.status = text;
    const el = $("status");
    el.textContent = text;
    el.dataset.state = text.startsWith("error") ? "error" : text;
  }

  // Something the person should know that is not (yet) an error: a silent microphone, a
  // stalled video, a renderer slower than real time.
  function showNotice(text) {
    state.notice = text || null;
    const el = $("notice");
    if (!el) return;
    el.textContent = text || "";
    el.hidden = !text;
  }

  function showError(text) {
    const el = $("error");
    if (!el) return;
    el.textContent = text || "";
    el.hidden = !text;
  }

  // Microphone level (publisher): so that a person sees the mic is heard before the avatar
  // has anything to say.
  let meter = null;
  function watchMic(stream) {
    const bar = $("mic-level");
    if (!bar || !window.AudioContext) return;
    const context = new AudioContext();
    const analyser = context.createAnalyser();
    analyser.fftSize = 1024;
    context.createMediaStreamSource(stream).connect(analyser);
    const samples = new Float32Array(analyser.fftSize);
    meter = { context, running: true, heardAt: performance.now(), warned: false };
    const draw = () => {
      if (!meter || !meter.running) return;
      analyser.getFloatTimeDomainData(samples);
      let sum = 0;
      for (const v of samples) sum += v * v;
      const db = 10 * Math.log10(sum / samples.length + 1e-10);
      // Digital silence for 3 s: a muted or wrong input, not a quiet room.
      const now = performance.now();
      if (db > -90) {
        meter.heardAt = now;
        if (meter.warned) showNotice(null);
        meter.warned = false;
      } else if (now - meter.heardAt > 3000 && !meter.warned) {
        meter.warned = true;
        showNotice("the microphone delivers silence: is it muted, or the wrong input?");
      }
      // -60 dBFS .. -10 dBFS across the bar.
      bar.style.width = `${Math.max(0, Math.min(100, ((db + 60) / 50) * 100))}%`;
      requestAnimationFrame(draw);
    };
    draw();
  }

  function unwatchMic() {
    if (meter) {
      meter.running = false;
      meter.context.close().catch(() => {});
    }
    meter = null;
    if ($("mic-level")) $("mic-level").style.width = "0";
  }

  function show(id, text) {
    const el = $(id);
    if (el) el.textContent = text;
  }

  function waitForIce(connection, timeoutMs) {
    // The server does not trickle: the offer must carry our candidates.
    if (connection.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        if (connection.iceGatheringState === "complete") {
          connection.removeEventListener("icegatheringstatechange", done);
          resolve();
        }
      };
      connection.addEventListener("icegatheringstatechange", done);
      setTimeout(resolve, timeoutMs);
    });
  }

  // Hold a track's playout by `ms` (its receiver's jitter buffer target): 0 shows frames as
  // soon as they are decoded, the server paces the video already.
  function holdTrack(receiver, ms) {
    try {
      if ("jitterBufferTarget" in receiver) receiver.jitterBufferTarget = ms;
      else if ("playoutDelayHint" in receiver) receiver.playoutDelayHint = ms / 1000;
    } catch (err) {
      // Not supported: the browser's own buffering stays.
    }
  }

  // Lip sync (web/avsync.js): only while the voice is heard; a muted voice holds nothing.
  async function readAvSync() {
    const sync = avSync;
    if (!pc || !sync) return;
    if (!state.listening) {
      if (sync.videoHoldMs || sync.audioHoldMs) {
        sync.reset();
        applyHolds(sync);
      }
      show("avsync", "voice off");
      show("avsync-detail", "");
      return;
    }
    const clocks = state.server && state.server.clocks;
    const now = performance.timeOrigin + performance.now();
    const voice = receivers.audio && receivers.audio.getSynchronizationSources
      ? receivers.audio.getSynchronizationSources()[0] : null;
    try {
      // The audio device's own delay, since the last reading (the voice is handed to it).
      (await pc.getStats()).forEach((r) => {
        if (r.type !== "media-playout") return;
        const before = playoutTotals;
        playoutTotals = [r.totalPlayoutDelay, r.totalSamplesCount];
        if (before && r.totalSamplesCount > before[1]) {
          outputMs = (1000 * (r.totalPlayoutDelay - before[0])) / (r.totalSamplesCount - before[1]);
        }
      });
    } catch (err) {
      return;
    }
    if (sync !== avSync) return;
    // Readings only while both play: a stalled picture or voice says nothing of the offset.
    if (clocks && clocks.audio && clocks.video && voice && lastShown
        && now - lastShown.at < 200 && now - voice.timestamp < 200) {
      const { micTimeMs } = window.MsadtalkerAvSync;
      const pictureLag = lastShown.at - micTimeMs(clocks.video, lastShown.rtp);
      const voiceLag = voice.timestamp + outputMs - micTimeMs(clocks.audio, voice.rtpTimestamp);
      if (sync.add(voiceLag - pictureLag)) applyHolds(sync);
      lags = { pictureLagMs: pictureLag, voiceLagMs: voiceLag };
    }
    state.avSync = {
      ...lags,
      outputMs,
      leadMs: sync.measuredLeadMs,
      videoHoldMs: sync.videoHoldMs,
      audioHoldMs: sync.audioHoldMs,
      changes: sync.changes,
    };
    if (sync.measuredLeadMs !== null) {
      const lead = Math.round(sync.measuredLeadMs);
      show("avsync", lead >= 0 ? `lips ${lead} ms ahead` : `voice ${-lead} ms ahead`);
      show("avsync-detail", `held: picture ${sync.videoHoldMs} ms · voice ${sync.audioHoldMs} ms`);
    }
  }

  function applyHolds(sync) {
    if (receivers.video) holdTrack(receivers.video, sync.videoHoldMs);
    if (receivers.audio) holdTrack(receivers.audio, sync.audioHoldMs);
  }

  let counting = false;
  function countFrames() {
    if (counting || !("requestVideoFrameCallback" in HTMLVideoElement.prototype)) return;
    counting = true;
    const onFrame = (now, metadata) => {
      state.framesPresented += 1;
      lastFrameAt = performance.now();
      if (metadata && metadata.rtpTimestamp !== undefined) {
        lastShown = { at: performance.timeOrigin + metadata.expectedDisplayTime, rtp: metadata.rtpTimestamp };
      }
      if (metadata && metadata.receiveTime) {
        held.push([now, metadata.expectedDisplayTime - metadata.receiveTime]);
        while (held.length && now - held[0][0] > 2000) held.shift();
      }
      if (bench) bench.frame(video, metadata);
      presentedAt.push(now);
      while (presentedAt.length && now - presentedAt[0] > 2000) presentedAt.shift();
      if (presentedAt.length > 1) {
        state.fps = ((presentedAt.length - 1) * 1000) / (now - presentedAt[0]);
      }
      video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);
  }

  // The answer with the `kind` section's media stream renamed: Chromium lines up (A/V sync)
  // only the tracks of one stream.
  function ownSyncGroup(sdp, kind, stream) {
    let inKind = false;
    return sdp.split("\r\n").map((line) => {
      if (line.startsWith("m=")) inKind = line.startsWith(`m=${kind} `);
      if (!inKind) return line;
      if (line.startsWith("a=msid:")) return line.replace(/^a=msid:\S+/, `a=msid:${stream}`);
      return line.replace(/^(a=ssrc:\d+ msid:)\S+/, `$1${stream}`);
    }).join("\r\n");
  }

  async function iceServers() {
    // The server's STUN/TURN servers (GET /ice-servers): TURN credentials are short-lived,
    // so they are asked for at every start, never stored.
    const response = await fetch("/ice-servers", { headers: authorized() });
    const answer = await response.json();
    if (response.status === 401 || response.status === 403) {
      throw askForToken(answer.error || response.statusText);
    }
    if (!response.ok) throw new Error(answer.error || response.statusText);
    return answer.iceServers;
  }

  // The answer with `a=ptime` in the `kind` section: the packet length this browser sends.
  function withPtime(sdp, kind, ms) {
    if (!ms) return sdp;
    let inKind = false;
    let done = false;
    const out = [];
    for (const line of sdp.split("\r\n")) {
      if (line.startsWith("m=")) inKind = line.startsWith(`m=${kind} `);
      if (inKind && line.startsWith("a=ptime:")) continue;
      if (inKind && !done && line.startsWith("a=")) {
        out.push(`a=ptime:${ms}`);
        done = true;
      }
      out.push(line);
    }
    return out.join("\r\n");
  }

  async function start() {
    if (retryTimer) clearTimeout(retryTimer);
    retryTimer = null;
    $("start").disabled = true;
    $("stop").disabled = false; // Stop also cancels a connection attempt or a retry
    state.error = null;
    showError(null);
    setStatus("connecting");
    try {
      if (role === "viewer" && !state.room) throw new Error("no room in the address (?room=ID)");
      const typed = $("token") ? $("token").value.trim() : "";
      if (typed) token = typed;
      pc = new RTCPeerConnection({ iceServers: await iceServers() });
      if (bench) bench.pc = pc;
      const remote = new MediaStream();
      pc.addEventListener("track", (event) => {
        // Show frames as soon as they are decoded: the server paces the video already (the
        // page's lip sync holds a track when the voice is heard, avsync.js).
        receivers[event.track.kind] = event.receiver;
        holdTrack(event.receiver, 0);
        remote.addTrack(event.track);
        video.srcObject = remote;
        if (bench && event.track.kind === "audio") bench.listenVoice(event.track);
      });
      const connection = pc;
      pc.addEventListener("connectionstatechange", () => {
        if (connection !== pc) return;
        const s = pc.connectionState;
        if (s === "connected") {
          setStatus("live");
          document.querySelector(".stage").classList.add("live");
          lastFrameAt = performance.now();
          retries = 0;
        } else if (s === "disconnected") {
          showNotice("the connection to the server is interrupted: waiting for it to come back");
        } else if (s === "failed") {
          end("connection_failed", "the connection to the server failed");
        }
      });
      if (role === "publisher") {
        // The latency bench's page-generated microphone (web/bench.js, ?bench=1 only).
        mic = bench ? bench.micStream() : await openMicrophone();
        mic.getAudioTracks()[0].addEventListener("ended", () => {
          if (mic) end("mic_ended", "the microphone was disconnected");
        });
        pc.addTransceiver(mic.getAudioTracks()[0], { direction: "sendrecv" });
        watchMic(mic);
      } else {
        pc.addTransceiver("audio", { direction: "recvonly" });
      }
      pc.addTransceiver("video", { direction: "recvonly" });
      await pc.setLocalDescription(await pc.createOffer());
      await waitForIce(pc, 3000);
      const body = { sdp: pc.localDescription.sdp, type: "offer", role };
      if (state.room) body.room = state.room;
      // The room in the URL too: a load balancer routes viewers to the room's instance by it.
      const offerUrl = state.room ? `/offer?room=${encodeURIComponent(state.room)}` : "/offer";
      const response = await fetch(offerUrl, {
        method: "POST",
        headers: authorized({ "Content-Type": "application/json" }),
        body: JSON.stringify(body),
      });
      const answer = await response.json();
      if (response.status === 401 || response.status === 403) {
        throw askForToken(answer.error || response.statusText);
      }
      if (!response.ok) throw new Error(answer.error || response.statusText);
      if ($("token-box")) $("token-box").hidden = true;
      state.sessionId = answer.session_id;
      state.room = answer.room;
      // The publisher's returned voice is only for listening to oneself (off by default):
      // out of the lips' sync group, so that Chromium does not hold the avatar's video back
      // to line it up with the audio's receive buffer. Viewers keep both in one group.
      // And its mic in 10 ms Opus packets: the packet that completes a 40 ms frame arrives
      // 5 ms sooner on average (the server makes a frame once its audio is in).
      // (?sync=1, ?ptime=20, ?playout=0: the bench's before/after of each of these.)
      // Viewers (and a publisher who listens) get lip sync from this page (web/avsync.js),
      // which needs the voice out of the picture's group too.
      let sdp = answer.sdp;
      const browserSync = role === "publisher" ? params.get("sync") === "1" : !PAGE_SYNC;
      if (!browserSync) sdp = ownSyncGroup(sdp, "audio", "msadtalker-voice");
      if (role === "publisher") sdp = withPtime(sdp, "audio", MIC_PTIME_MS);
      if (params.get("playout") === "0") sdp = sdp.replace(/a=extmap:\d+ \S+playout-delay\r\n/g, "");
      await pc.setRemoteDescription({ type: "answer", sdp });
      watchServerClose(connection);
      if (role === "publisher") {
        // The server's link: with a viewer token for this room when it mints them, never
        // this page's own (publisher) token.
        const link = new URL(answer.viewer_url, location.href).href;
        $("viewer-link").href = link;
        $("viewer-link").textContent = link;
        $("share").hidden = false;
        $("interrupt").disabled = false;
      }
      countFrames();
      pollFailures = 0;
      pollTimer = setTimeout(poll, POLL_MS);
      watchTimer = setInterval(watchVideo, 250);
      if (!browserSync && PAGE_SYNC) {
        avSync = new window.MsadtalkerAvSync({ leadMs: LEAD_MS });
        avTimer = setInterval(readAvSync, AV_READ_MS);
      }
    } catch (err) {
      const message = String((err && err.message) || err);
      await stop("error");
      if (retries > 0 && !/token/.test(message)) {
        // A retry after the session ended: the server (or the room) is not back yet.
        showError(`not connected: ${message}`);
        scheduleRetry();
      } else {
        state.error = message;
        setStatus("error");
        showError(state.error);
      }
    }
  }

  async function openMicrophone() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      throw new Error("this browser gives no microphone here (the page needs https or localhost)");
    }
    try {
      return await navigator.mediaDevices.getUserMedia({
        audio: { echoCancellation: true, noiseSuppression: false, autoGainControl: true },
        video: false,
      });
    } catch (err) {
      const name = err && err.name;
      if (name === "NotAllowedError" || name === "SecurityError") {
        throw new Error("the microphone is blocked: allow it for this site (address bar) and press Start");
      }
      if (name === "NotFoundError" || name === "OverconstrainedError") {
        throw new Error("no microphone found: connect one and press Start");
      }
      if (name === "NotReadableError") {
        throw new Error("the microphone is in use by another program or failed to start");
      }
      throw err;
    }
  }

  // The server's own close (shutdown, or it dropped the session) reaches the browser as the
  // DTLS close of the media transport: the page ends at once, then asks why.
  function watchServerClose(connection) {
    const receiver = connection.getReceivers()[0];
    const transport = receiver && receiver.transport;
    if (!transport) return;
    transport.addEventListener("statechange", () => {
      if (connection !== pc) return;
      if (transport.state === "closed" || transport.state === "failed") {
        end("closed", "the server closed the session");
      }
    });
  }

  // No frame for STALL_MS while the tab is visible: say so (network pause, server stalled or
  // gone), and ask the server at once rather than at the next poll.
  function watchVideo() {
    if (!pc || state.status !== "live" && state.status !== "stalled") return;
    const now = performance.now();
    if (document.hidden) {
      if (hiddenSince === null) hiddenSince = now;
      return;
    }
    if (hiddenSince !== null) {
      // Back from the background: rVFC did not run meanwhile, so that was no stall.
      const away = (now - hiddenSince) / 1000;
      hiddenSince = null;
      lastFrameAt = now;
      if (away > 2) showNotice(`the tab was in the background for ${away.toFixed(0)} s`);
      return;
    }
    const silentFor = now - lastFrameAt;
    if (silentFor > STALL_MS) {
      if (state.status === "live") {
        setStatus("stalled");
        if (pollTimer) clearTimeout(pollTimer);
        pollTimer = setTimeout(poll, 0);
      }
      showNotice(`no video from the server for ${(silentFor / 1000).toFixed(1)} s`);
    } else if (state.status === "stalled") {
      setStatus("live");
      showNotice(null);
    }
  }

  // The session is over without this page's Stop: show it and why, then try again later
  // when the cause may pass (the server restarting, the network).
  async function end(reason, sentence) {
    if (!pc && !state.sessionId) return;
    const id = state.sessionId;
    await stop(reason);
    state.ended = reason;
    setStatus("ended");
    showNotice(null);
    showError(`session ended: ${sentence}`);
    if (id && reason === "closed") {
      // The server kept why it ended the session (410): for the person, one short request.
      try {
        const response = await fetch(`/sessions/${id}`, { headers: authorized() });
        const body = await response.json();
        if (response.status === 410 && body.ended) {
          reason = body.ended;
          state.ended = reason;
          showError(body.error);
        }
      } catch (err) {
        reason = "unreachable";
      }
    }
    if (RETRIED.has(reason)) scheduleRetry();
  }

  function scheduleRetry() {
    const delay = RETRY_MS[Math.min(retries, RETRY_MS.length - 1)];
    retries += 1;
    state.retryDelayMs = delay;
    setStatus("waiting");
    $("stop").disabled = false;
    showNotice(`trying again in ${Math.round(delay / 1000)} s`);
    retryTimer = setTimeout(() => {
      retryTimer = null;
      showNotice(null);
      start();
    }, delay);
  }

  // The session's figures, every POLL_MS; after a failed request the next waits twice as
  // long (up to 8 s), so a server that is gone is not asked (and the console not filled)
  // twice a second.
  async function poll() {
    pollTimer = null;
    if (!pc || !state.sessionId) return;
    const id = state.sessionId;
    let rtt = 0;
    let response = null;
    try {
      const stats = await pc.getStats();
      stats.forEach((report) => {
        if (report.type === "candidate-pair" && report.nominated && report.currentRoundTripTime) {
          rtt = report.currentRoundTripTime;
        }
      });
      response = await fetch(`/sessions/${id}`, { headers: authorized() });
    } catch (err) {
      response = null;
    }
    if (id !== state.sessionId) return;
    if (response && (response.status === 410 || response.status === 404)) {
      const body = await response.json().catch(() => ({}));
      if (body.ended) state.ended = body.ended;
      end(body.ended || "closed", (body.error || "the server no longer knows it").replace(/^session '[^']*' ended: /, ""));
      return;
    }
    if (!response || !response.ok) {
      pollFailures += 1;
      if (!response && state.status === "stalled") {
        showNotice(`no video for ${((performance.now() - lastFrameAt) / 1000).toFixed(1)} s and the server does not answer`);
      }
      state.pollDelayMs = Math.min(8000, POLL_MS * 2 ** pollFailures);
      pollTimer = setTimeout(poll, state.pollDelayMs);
      return;
    }
    pollFailures = 0;
    state.pollDelayMs = POLL_MS;
    pollTimer = setTimeout(poll, POLL_MS);
    state.server = await response.json();
    showFigures(state.server.session, rtt);
  }

  function showFigures(s, rtt) {
    // An estimate of mic sample -> mouth on this screen, from its parts: the server's
    // designed delay (the rest of the frame + lookahead), its work (motion + render), the
    // network round trip (mic up, video down) and how long this browser held each frame
    // between receiving and showing it (requestVideoFrameCallback). The latency bench
    // measures the real thing (`msadtalker bench latency --browser`).
    const work = s.step_ms_p50 + (s.render_ms_p50 || 0);
    const holdMs = held.length ? held.reduce((a, h) => a + h[1], 0) / held.length : 0;
    const network = 1000 * rtt;
    state.latencyMs = Math.round(s.latency_ms_designed + work + network + holdMs);
    show("latency", `≈ ${state.latencyMs} ms`);
    show("latency-detail", `design ${Math.round(s.latency_ms_designed)} · work ${Math.round(work)} · net ${Math.round(network)} · browser ${Math.round(holdMs)}`);
    show("fps", state.fps ? state.fps.toFixed(1) : `${s.fps}`);
    show("fps-detail", `server ${s.fps.toFixed(1)}`);
    // One quantity for the word and the bar: the silence weight (0 = at rest .. 1 = full
    // head motion), which is what the viewer sees; the per-frame "lips still" call would
    // contradict the bar while the weight eases in and out.
    const weight = Math.max(0, Math.min(1, s.silence_weight));
    const voice = weight >= 0.5 ? "speaking" : weight > 0 ? "settling" : "silent";
    show("silence", voice);
    show("silence-detail", `head motion ${Math.round(100 * weight)} %`);
    const bar = $("weight");
    if (bar) bar.style.width = `${Math.round(100 * weight)}%`;
    const badge = $("badge");
    if (badge) {
      badge.hidden = false;
      badge.dataset.voice = voice;
      badge.textContent = voice;
    }
    if (s.notice) showNotice(s.notice);
    const share = s.frames_out ? (100 * s.dropped_frames) / s.frames_out : 0;
    show("dropped", `${s.dropped_frames}`);
    show("dropped-detail", `${share.toFixed(1)} % of ${s.frames_out} frames`);
    show("viewers", `${state.server.viewers}`);
  }

  async function interrupt() {
    if (!state.sessionId) return;
    const button = $("interrupt");
    const response = await fetch(`/sessions/${state.sessionId}/interrupt`, {
      method: "POST",
      headers: authorized(),
    });
    if (response.ok && button) {
      button.classList.add("flash");
      setTimeout(() => button.classList.remove("flash"), 400);
    }
  }

  async function stop(reason) {
    if (pollTimer) clearTimeout(pollTimer);
    pollTimer = null;
    if (watchTimer) clearInterval(watchTimer);
    watchTimer = null;
    if (avTimer) clearInterval(avTimer);
    avTimer = null;
    avSync = null;
    state.avSync = null;
    lastShown = null;
    playoutTotals = null;
    outputMs = 0;
    lags = {};
    for (const kind of Object.keys(receivers)) delete receivers[kind];
    if (retryTimer && reason === "user") {
      clearTimeout(retryTimer);
      retryTimer = null;
      showNotice(null);
    }
    if (reason === "user") retries = 0;
    const id = state.sessionId;
    state.sessionId = null;
    if (id && reason !== "closed" && reason !== "connection_failed") {
      fetch(`/sessions/${id}`, { method: "DELETE", headers: authorized() }).catch(() => {});
    }
    if (mic) mic.getTracks().forEach((t) => t.stop());
    mic = null;
    unwatchMic();
    if (pc) pc.close();
    pc = null;
    document.querySelector(".stage").classList.remove("live");
    if ($("badge")) $("badge").hidden = true;
    $("start").disabled = false;
    $("stop").disabled = true;
    if ($("interrupt")) $("interrupt").disabled = true;
    if (!state.error) setStatus(reason && reason !== "user" ? reason : "idle");
    if (reason === "user") {
      state.ended = null;
      showError(null);
    }
    if (retryTimer) $("stop").disabled = false;
    if ($("share")) $("share").hidden = true;
  }

  $("start").addEventListener("click", () => {
    retries = 0;
    start();
  });
  if ($("listen")) {
    $("listen").addEventListener("click", () => {
      state.listening = !state.listening;
      video.muted = !state.listening;
      if (state.listening) video.play().catch(() => {});
      showListening();
    });
  }
  $("stop").addEventListener("click", () => stop("user"));
  if ($("interrupt")) {
    $("interrupt").addEventListener("click", interrupt);
    document.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && !$("interrupt").disabled) interrupt();
    });
  }
  if ($("copy")) {
    $("copy").addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText($("viewer-link").href);
        $("copy").textContent = "Copied";
      } catch (err) {
        $("copy").textContent = "Select and copy";
      }
      setTimeout(() => { $("copy").textContent = "Copy"; }, 1500);
    });
  }
})();
