// Latency bench hook of the live pages (`msadtalker bench latency --browser`). Inert unless the
// address carries ?bench=1: then the publisher's microphone is a signal this page generates
// (WebAudio: faint noise, then voiced bursts with sharp onsets whose times are known on the
// page's clock) and every presented video frame's mouth is read off the picture
// (requestVideoFrameCallback + canvas), so mic onset -> mouth presented is measured where a
// person sees it. Times are epoch milliseconds (performance.timeOrigin + page clock) so that a
// viewer tab's frames compare with the publisher tab's onsets.
"use strict";

(() => {
  if (!new URLSearchParams(location.search).has("bench")) return;

  const epoch = (pageMs) => performance.timeOrigin + pageMs;
  const MAX_KEPT = 20000; // frames/onsets kept between two take() calls (bounded)

  const bench = {
    onsets: [], // [epoch ms of the onset at the mic, burst index]
    frames: [], // [epoch ms presented, openness, epoch ms received or null, rtp timestamp or null]
    probe: null,
    bursts: [], // Float32Array each, at burstRate
    burstRate: 16000,
    periodS: 2.0,
    leadS: 1.5,
    audio: null,
    pc: null,
    micMuted: false,
    canvas: null,
    scheduled: [], // [context time of the onset, burst index], not yet handed out
    timer: null,
    next: 0,
    onsetCount: 0,
    voiceAudio: null,
    voiceOnsets: [], // epoch ms: a burst's onset in the received voice

    // The bench hands over the mouth region (from the server's own renderer) and the bursts.
    configure(options) {
      this.probe = options.probe || null;
      if (options.bursts) this.bursts = options.bursts.map((b) => Float32Array.from(b));
      if (options.burstRate) this.burstRate = options.burstRate;
      if (options.periodS) this.periodS = options.periodS;
      if (options.leadS !== undefined) this.leadS = options.leadS;
      return true;
    },

    // The microphone: faint noise plus the bursts, through a MediaStreamDestination.
    micStream() {
      const context = new AudioContext({ latencyHint: "interactive", sampleRate: 48000 });
      const destination = context.createMediaStreamDestination();
      const noise = context.createBuffer(1, context.sampleRate, context.sampleRate);
      const data = noise.getChannelData(0);
      for (let i = 0; i < data.length; i += 1) data[i] = 0.0005 * (2 * Math.random() - 1);
      const floor = context.createBufferSource();
      floor.buffer = noise;
      floor.loop = true;
      floor.connect(destination);
      floor.start();
      this.audio = { context, destination };
      this.next = context.currentTime + this.leadS;
      this.timer = setInterval(() => this.schedule(), 250);
      this.schedule();
      return destination.stream;
    },

    schedule() {
      const audio = this.audio;
      if (!audio || !this.bursts.length) return;
      const { context, destination } = audio;
      if (context.state === "suspended") context.resume();
      while (this.next < context.currentTime + 1.0) {
        this.onsetCount += 1;
        const index = this.onsetCount;
        const samples = this.bursts[(index - 1) % this.bursts.length];
        const buffer = context.createBuffer(1, samples.length, this.burstRate);
        buffer.copyToChannel(samples, 0);
        const source = context.createBufferSource();
        source.buffer = buffer;
        source.connect(destination);
        source.start(this.next);
        this.scheduled.push([this.next, index]);
        // Onsets fall at every phase of the server's 40 ms frame.
        this.next += this.periodS + 0.04 * Math.random();
      }
    },

    // Audio clock -> page clock. getOutputTimestamp says when a context time reaches the
    // output; the graph renders (and the MediaStreamDestination delivers) outputLatency
    // earlier than that.
    contextToEpoch(contextTime) {
      return this.toEpoch(this.audio.context, contextTime);
    },

    // The received voice: every burst's onset as it reaches this page's audio graph (a
    // ScriptProcessor reads the remote track; muted, the page plays the voice itself), so
    // voice latency and lips-vs-voice offset are measured where the page plays them. The
    // audio output device's latency comes on top (reported: outputLatencyMs).
    listenVoice(track) {
      if (this.voiceAudio) return;
      const context = new AudioContext({ latencyHint: "interactive", sampleRate: 48000 });
      const source = context.createMediaStreamSource(new MediaStream([track]));
      const size = 256;
      const processor = context.createScriptProcessor(size, 1, 1);
      const mute = context.createGain();
      mute.gain.value = 0;
      source.connect(processor);
      processor.connect(mute);
      mute.connect(context.destination);
      // Onset: the first 4 ms window loud after 0.3 s of quiet windows (sample by sample,
      // codec noise and the receiver's concealment cross any fixed level between bursts).
      const win = Math.round(0.004 * context.sampleRate);
      const quietNeeded = Math.round(0.3 / 0.004);
      let quiet = 0;
      let sum = 0;
      let filled = 0;
      let winStart = 0;
      processor.onaudioprocess = (event) => {
        const data = event.inputBuffer.getChannelData(0);
        for (let i = 0; i < data.length; i += 1) {
          if (filled === 0) winStart = event.playbackTime + (i - size) / context.sampleRate;
          sum += data[i] * data[i];
          filled += 1;
          if (filled < win) continue;
          const rms = Math.sqrt(sum / win);
          if (rms > 0.03 && quiet >= quietNeeded && this.voiceOnsets.length < MAX_KEPT) {
            // The input is one buffer older than the output it will be played in.
            this.voiceOnsets.push(this.toEpoch(context, winStart));
          }
          quiet = rms < 0.01 ? quiet + 1 : 0;
          sum = 0;
          filled = 0;
        }
      };
      this.voiceAudio = { context, source, processor };
    },

    toEpoch(context, contextTime) {
      const stamp = context.getOutputTimestamp();
      const ahead = (context.outputLatency || 0) * 1000;
      return epoch(stamp.performanceTime + (contextTime - stamp.contextTime) * 1000 - ahead);
    },

    // Called by the page for every presented frame.
    frame(video, metadata) {
      const probe = this.probe;
      if (!probe || !video.videoWidth) return;
      const sx = video.videoWidth / probe.width;
      const sy = video.videoHeight / probe.height;
      if (!this.canvas) this.canvas = document.createElement("canvas");
      const canvas = this.canvas;
      canvas.width = probe.w;
      canvas.height = probe.h;
      const g = canvas.getContext("2d", { willReadFrequently: true });
      g.drawImage(video, probe.x * sx, probe.y * sy, probe.w * sx, probe.h * sy, 0, 0, probe.w, probe.h);
      const pixels = g.getImageData(0, 0, probe.w, probe.h).data;
      let dot = 0;
      for (let k = 0; k < probe.index.length; k += 1) {
        const p = 4 * probe.index[k];
        const q = 3 * k;
        dot += (pixels[p] - probe.closed[q]) * probe.direction[q]
          + (pixels[p + 1] - probe.closed[q + 1]) * probe.direction[q + 1]
          + (pixels[p + 2] - probe.closed[q + 2]) * probe.direction[q + 2];
      }
      const received = metadata.receiveTime ? epoch(metadata.receiveTime) : null;
      if (this.frames.length < MAX_KEPT) {
        this.frames.push([epoch(metadata.expectedDisplayTime), dot / probe.norm, received,
          metadata.rtpTimestamp === undefined ? null : metadata.rtpTimestamp]);
      }
    },

    // What was measured since the last call (the bench polls).
    take() {
      const audio = this.audio;
      const due = [];
      if (audio) {
        const now = audio.context.currentTime;
        this.scheduled = this.scheduled.filter(([when, index]) => {
          if (when > now) return true;
          due.push([this.contextToEpoch(when), index]);
          return false;
        });
      }
      const frames = this.frames;
      this.frames = [];
      const voice = this.voiceOnsets;
      this.voiceOnsets = [];
      return {
        onsets: due,
        frames,
        voice,
        outputLatencyMs: audio ? 1000 * (audio.context.outputLatency || 0) : null,
        baseLatencyMs: audio ? 1000 * (audio.context.baseLatency || 0) : null,
      };
    },

    // The receive side's own figures (Chromium's buffers), for the bench's breakdown.
    async rtcStats() {
      if (!this.pc) return null;
      const out = {};
      (await this.pc.getStats()).forEach((r) => {
        if (r.type === "inbound-rtp") {
          out[r.kind] = {
            jitterBufferDelay: r.jitterBufferDelay,
            jitterBufferEmittedCount: r.jitterBufferEmittedCount,
            jitterBufferTargetDelay: r.jitterBufferTargetDelay,
            framesDecoded: r.framesDecoded,
            totalDecodeTime: r.totalDecodeTime,
            packetsReceived: r.packetsReceived,
            packetsLost: r.packetsLost,
            framesDropped: r.framesDropped,
            estimatedPlayoutTimestamp: r.estimatedPlayoutTimestamp,
          };
        }
        if (r.type === "media-playout") out.playout = { totalPlayoutDelay: r.totalPlayoutDelay, totalSamplesCount: r.totalSamplesCount };
      });
      // The holds the page's lip sync set (web/avsync.js), if it runs.
      const sync = window.msadtalker && window.msadtalker.avSync;
      if (sync) out.avsync = { ...sync };
      return out;
    },
  };
  window.msadtalkerBench = bench;
})();
