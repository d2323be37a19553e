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
  const presentedAt = [];

  if ($("room-name")) $("room-name").textContent = state.room || "?";

  function setStatus(text) {
    state.status = text;
    const el = $("status");
    el.textContent = text;
    el.dataset.state = text.startsWith("error") ? "error" : text;
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
    meter = { context, running: true };
    const draw = () => {
      if (!meter || !meter.running) return;
      analyser.getFloatTimeDomainData(samples);
      let sum = 0;
      for (const v of samples) sum += v * v;
      const db = 10 * Math.log10(sum / samples.length + 1e-10);
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

  function countFrames() {
    if (!("requestVideoFrameCallback" in HTMLVideoElement.prototype)) return;
    const onFrame = (now) => {
      state.framesPresented += 1;
      presentedAt.push(now);
      while (presentedAt.length && now - presentedAt[0] > 2000) presentedAt.shift();
      if (presentedAt.length > 1) {
        state.fps = ((presentedAt.length - 1) * 1000) / (now - presentedAt[0]);
      }
      video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);
  }

  async function start() {
    $("start").disabled = true;
    state.error = null;
    showError(null);
    setStatus("connecting");
    try {
      if (role === "viewer" && !state.room) throw new Error("no room in the address (?room=ID)");
      const typed = $("token") ? $("token").value.trim() : "";
      if (typed) token = typed;
      pc = new RTCPeerConnection({ iceServers: [] });
      const remote = new MediaStream();
      pc.addEventListener("track", (event) => {
        // Show frames as soon as they are decoded: the server paces the video already, and
        // voice and lips travel in the same frames (the browser still syncs the two).
        try {
          if ("jitterBufferTarget" in event.receiver) event.receiver.jitterBufferTarget = 0;
          else if ("playoutDelayHint" in event.receiver) event.receiver.playoutDelayHint = 0;
        } catch (err) {
          // Not supported: the browser's own buffering stays.
        }
        remote.addTrack(event.track);
        video.srcObject = remote;
      });
      pc.addEventListener("connectionstatechange", () => {
        const s = pc && pc.connectionState;
        if (s === "connected") {
          setStatus("live");
          document.querySelector(".stage").classList.add("live");
        } else if (s === "failed" || s === "closed") {
          stop(s);
        }
      });
      if (role === "publisher") {
        mic = await navigator.mediaDevices.getUserMedia({
          audio: { echoCancellation: true, noiseSuppression: false, autoGainControl: true },
          video: false,
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
      const response = await fetch("/offer", {
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
      await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
      if (role === "publisher") {
        // The server's link: with a viewer token for this room when it mints them, never
        // this page's own (publisher) token.
        const link = new URL(answer.viewer_url, location.href).href;
        $("viewer-link").href = link;
        $("viewer-link").textContent = link;
        $("share").hidden = false;
        $("interrupt").disabled = false;
      }
      $("stop").disabled = false;
      countFrames();
      pollTimer = setInterval(poll, 500);
    } catch (err) {
      state.error = String((err && err.message) || err);
      setStatus("error");
      showError(state.error);
      await stop("error");
    }
  }

  async function poll() {
    if (!pc || !state.sessionId) return;
    let rtt = 0;
    let jitterBuffer = 0;
    try {
      const stats = await pc.getStats();
      stats.forEach((report) => {
        if (report.type === "candidate-pair" && report.nominated && report.currentRoundTripTime) {
          rtt = report.currentRoundTripTime;
        }
        if (report.type === "inbound-rtp" && report.kind === "video" && report.jitterBufferEmittedCount) {
          jitterBuffer = report.jitterBufferDelay / report.jitterBufferEmittedCount;
        }
      });
      const response = await fetch(`/sessions/${state.sessionId}`, { headers: authorized() });
      if (!response.ok) return;
      state.server = await response.json();
    } catch (err) {
      return;
    }
    const s = state.server.session;
    // Mic sample -> mouth on screen: the server's designed delay (frame + lookahead), its
    // processing (motion + render), the network round trip (mic up, video down) and this
    // browser's video jitter buffer.
    const processing = s.step_ms_p50 + (s.render_ms_p50 || 0);
    const network = 1000 * (rtt + jitterBuffer);
    state.latencyMs = Math.round(s.latency_ms_designed + processing + network);
    show("latency", `${state.latencyMs} ms`);
    show("latency-detail", `pipeline ${Math.round(s.latency_ms_designed)} · work ${Math.round(processing)} · net ${Math.round(network)}`);
    show("fps", state.fps ? state.fps.toFixed(1) : `${s.fps}`);
    show("fps-detail", `server ${s.fps.toFixed(1)}`);
    const voice = s.silent ? "silent" : "speaking";
    show("silence", voice);
    const weight = $("weight");
    if (weight) weight.style.width = `${Math.round(100 * s.silence_weight)}%`;
    const badge = $("badge");
    if (badge) {
      badge.hidden = false;
      badge.dataset.voice = voice;
      badge.textContent = voice;
    }
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
    if (pollTimer) clearInterval(pollTimer);
    pollTimer = null;
    const id = state.sessionId;
    state.sessionId = null;
    if (id && reason !== "closed" && reason !== "failed") {
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
    if ($("share")) $("share").hidden = true;
  }

  $("start").addEventListener("click", start);
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
