"""Voice activity from the audio itself (WebRTC's VAD): an optional second silence signal.

The paper detects silence from lip motion alone (``silence.source = "lips"``). A VAD can
back it up: ``"vad"`` uses the VAD alone, ``"both"`` calls a frame speech only when the lips
move *and* the VAD hears a voice (noise that makes the lip source twitch, or a voiceless
mouth movement, stays silent). Per video frame (640 samples at 16 kHz) the VAD judges its two
20 ms halves; the frame is voiced when either half is. Delay: 0 frames; the VAD keeps a little
state of its own (``reset`` restarts it).
"""

from __future__ import annotations

import numpy as np

from msadtalker.errors import ConfigError
from msadtalker.timing import SAMPLE_RATE, SAMPLES_PER_FRAME

_HALF = SAMPLES_PER_FRAME // 2  # 320 samples = 20 ms


class VoiceActivity:
    """``voiced(frame_samples) -> bool`` for consecutive 640-sample frames."""

    def __init__(self, aggressiveness: int = 2) -> None:
        if aggressiveness not in (0, 1, 2, 3):
            raise ConfigError("silence.vad_aggressiveness must be 0, 1, 2 or 3")
        try:
            import webrtcvad
        except ImportError:
            raise ConfigError(
                "silence.source 'vad'/'both' needs the webrtcvad-wheels package "
                "(pip install 'msadtalker[live]')"
            ) from None
        self._module = webrtcvad
        self._aggressiveness = aggressiveness
        self._vad = webrtcvad.Vad(aggressiveness)

    def voiced(self, samples: np.ndarray) -> bool:
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        if len(x) < SAMPLES_PER_FRAME:
            x = np.pad(x, (0, SAMPLES_PER_FRAME - len(x)))
        pcm = (np.clip(x[:SAMPLES_PER_FRAME], -1.0, 1.0) * 32767.0).astype("<i2")
        return any(
            self._vad.is_speech(pcm[i : i + _HALF].tobytes(), SAMPLE_RATE) for i in (0, _HALF)
        )

    def reset(self) -> None:
        self._vad = self._module.Vad(self._aggressiveness)
