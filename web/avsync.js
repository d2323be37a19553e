// Lip sync done by the page, not by the browser's A/V sync.
//
// Chromium lines up the tracks of one stream itself, but it only corrects an offset once the
// offset's running average passes 30 ms, by half of it, and then starts the average over: any
// hold inside that +-30 ms band is stable, so every burst of audio jitter (a busy machine, a
// late packet) ratchets the picture's hold up and nothing brings it down. Over ten minutes a
// viewer's video hold wandered from 1 ms to 26 ms and its latency with it (docs/live.md,
// "Lip sync on the page"). So the pages take the voice out of the picture's sync group (the
// answer renames its stream) and this controller holds whichever track must wait, by just as
// much as it must, through the receivers' `jitterBufferTarget`:
//
// * it reads what each track plays now in the mic's time, 4 times a second: the picture shown
//   (`requestVideoFrameCallback`: its RTP timestamp and when it was shown) and the voice
//   handed to the audio device (the receiver's `getSynchronizationSources`, plus the device's
//   own delay from the `media-playout` stats), each RTP timestamp mapped to the mic time with
//   the anchors the server states for this session (`clocks` of GET /sessions/ID; Chromium
//   only estimates a stream's playout in sender time inside a sync group), and acts on the
//   median of 2 s of readings;
// * the lips may lead the voice by up to `leadMs` (25 ms): the direction people do not notice
//   (sound from 8 m away lags by 25 ms; ATSC IS-191 accepts audio up to 45 ms late and 15 ms
//   early), and the one that keeps the picture unheld when the voice's buffer is a little
//   longer than the picture's path. Beyond that the picture is held; a voice ahead of the lips
//   is held instead, only once the picture is not held at all;
// * it releases a hold as soon as it is more than needed: no band to wander in but the
//   tolerance, so the hold follows the need both ways.
"use strict";

(() => {
  const MAX_HOLD_MS = 500; // the playout-delay maximum the server sends viewers

  class AvSync {
    constructor(options = {}) {
      this.leadMs = options.leadMs ?? 25;
      this.toleranceMs = options.toleranceMs ?? 5;
      this.window = options.window ?? 8; // readings per decision
      this.settle = options.settle ?? 4; // readings skipped after a change takes effect
      this.videoHoldMs = 0;
      this.audioHoldMs = 0;
      this.measuredLeadMs = null; // the last decision's median: lips ahead of the voice (ms)
      this.changes = 0;
      this.readings = [];
      this.skip = 0;
    }

    // One reading of how far the lips lead the voice (ms; < 0: the voice leads). True when
    // the holds changed.
    add(leadMs) {
      if (!Number.isFinite(leadMs)) return false;
      if (this.skip > 0) {
        this.skip -= 1;
        return false;
      }
      this.readings.push(leadMs);
      if (this.readings.length < this.window) return false;
      const sorted = [...this.readings].sort((a, b) => a - b);
      this.readings = [];
      const lead = sorted[Math.floor(sorted.length / 2)];
      this.measuredLeadMs = lead;
      return this.decide(lead);
    }

    // From the lips' lead over the voice with the current holds to the holds wanted.
    decide(lead) {
      const tol = this.toleranceMs;
      let video = this.videoHoldMs;
      let audio = this.audioHoldMs;
      if (audio > 0 && lead > tol) {
        audio -= Math.min(audio, lead); // the voice is held though the lips lead already
      } else if (lead > this.leadMs + tol) {
        video += lead - this.leadMs; // the lips are too far ahead: hold the picture
      } else if (video > 0 && lead < this.leadMs - tol) {
        video -= Math.min(video, this.leadMs - lead); // the picture is held more than needed
      } else if (video === 0 && lead < -tol) {
        audio -= lead; // the voice is ahead of the lips: hold the voice
      }
      video = Math.min(MAX_HOLD_MS, Math.round(video));
      audio = Math.min(MAX_HOLD_MS, Math.round(audio));
      if (video === this.videoHoldMs && audio === this.audioHoldMs) return false;
      this.videoHoldMs = video;
      this.audioHoldMs = audio;
      this.changes += 1;
      this.skip = this.settle;
      return true;
    }

    reset() {
      this.videoHoldMs = 0;
      this.audioHoldMs = 0;
      this.measuredLeadMs = null;
      this.readings = [];
      this.skip = 0;
    }
  }

  // The mic time (epoch ms) an RTP timestamp stands for, from the server's anchor for its
  // stream ({rtp, ms, rate}); RTP timestamps wrap at 2^32.
  function micTimeMs(clock, rtp) {
    let ticks = (rtp - clock.rtp) % 4294967296;
    if (ticks > 2147483648) ticks -= 4294967296;
    if (ticks < -2147483648) ticks += 4294967296;
    return clock.ms + (1000 * ticks) / clock.rate;
  }

  window.MsadtalkerAvSync = AvSync;
  window.MsadtalkerAvSync.micTimeMs = micTimeMs;
})();
