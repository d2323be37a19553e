"""SadTalker's log-mel front end, batch form, float64 numpy (official: OpenTalker/SadTalker
``src/utils/audio.py`` for the spectrogram, ``src/generate_batch.py`` for the per-frame windows).

``log_mel(wav)``: 16 kHz mono waveform -> (T_mel, 80) normalised log-mel in [-4, 4]:
cut to ``640 * T`` samples (T = floor(n / 640)), pre-emphasis 0.97, centred STFT (zero pad
400 each side, periodic Hann 800, hop 200), magnitude, Slaney mel (80 bands, 55-7600 Hz, Slaney
area norm), ``20 log10(max(1e-5, .)) - 20``, ``clip(8 (dB + 100) / 100 - 4, -4, 4)``.
``T_mel = 1 + floor(640 T / 200)``.

``mel_windows(mel, T)``: the (T, 80, 16) per-video-frame windows cut exactly as the official
code cuts them.

The per-column arithmetic (``_columns_from_frames``) is shared with the streaming
``MelStream`` and is done one STFT frame at a time in a fixed order (a batched FFT and a stacked
matrix-vector product), so batch and stream give bit-identical rows whatever the chunking.
The filterbank is built the way librosa builds it (float64 maths, stored as float32, used in
float64), which is what the official code multiplies with.
"""

from __future__ import annotations

from functools import cache

import numpy as np
from scipy.signal import get_window

from msadtalker.timing import MEL_HOP, SAMPLE_RATE, SAMPLES_PER_FRAME

N_FFT = 800
WIN_LENGTH = 800
HOP = MEL_HOP  # 200
PAD = N_FFT // 2  # centred STFT: 400 zeros each side
N_MELS = 80
FMIN = 55.0
FMAX = 7600.0
PREEMPHASIS = 0.97
MIN_LEVEL_DB = -100.0
REF_LEVEL_DB = 20.0
MAX_ABS_VALUE = 4.0
WINDOW_FRAMES = 16  # mel frames per video-frame window
MEL_FLOOR = 1e-5  # amplitude floor before log10 (= -100 dB)


# ---------------------------------------------------------------------------- filterbank


def hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney mel scale: linear (3/200 mel per Hz) below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    f_sp = 200.0 / 3.0
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    mels = hz / f_sp
    log_part = hz >= min_log_hz
    mels = np.where(
        log_part, min_log_mel + np.log(np.maximum(hz, min_log_hz) / min_log_hz) / logstep, mels
    )
    return mels


def mel_to_hz(mels: np.ndarray) -> np.ndarray:
    """Inverse of ``hz_to_mel``."""
    mels = np.asarray(mels, dtype=np.float64)
    f_sp = 200.0 / 3.0
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    hz = f_sp * mels
    return np.where(mels >= min_log_mel, min_log_hz * np.exp(logstep * (mels - min_log_mel)), hz)


def mel_band_edges(n_mels: int = N_MELS, fmin: float = FMIN, fmax: float = FMAX) -> np.ndarray:
    """The n_mels + 2 band edge/centre frequencies in Hz, equally spaced in Slaney mel."""
    lo, hi = hz_to_mel(np.array([fmin, fmax]))
    return mel_to_hz(np.linspace(lo, hi, n_mels + 2))


@cache
def _mel_basis_cached() -> np.ndarray:
    edges = mel_band_edges()
    fft_freqs = np.fft.rfftfreq(N_FFT, d=1.0 / SAMPLE_RATE)
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_freqs[None, :]
    weights = np.zeros((N_MELS, len(fft_freqs)), dtype=np.float32)
    for band in range(N_MELS):
        rising = -ramps[band] / widths[band]
        falling = ramps[band + 2] / widths[band + 1]
        weights[band] = np.maximum(0.0, np.minimum(rising, falling))
    # Slaney area normalisation: each triangle scaled by 2 / (f_hi - f_lo). Done in place on
    # the float32 array (maths in float64, result stored as float32) as the reference does.
    weights *= (2.0 / (edges[2 : N_MELS + 2] - edges[:N_MELS]))[:, None]
    weights.setflags(write=False)
    return weights


def mel_filterbank() -> np.ndarray:
    """(80, 401) float32 Slaney-normalised triangular filters, 55-7600 Hz (read-only)."""
    return _mel_basis_cached()


@cache
def _projection() -> np.ndarray:
    # (401, 80) float64, C-contiguous: the right operand of the per-frame projection.
    proj = np.ascontiguousarray(mel_filterbank().astype(np.float64).T)
    proj.setflags(write=False)
    return proj


@cache
def _stft_window() -> np.ndarray:
    window = np.asarray(get_window("hann", WIN_LENGTH, fftbins=True), dtype=np.float64)
    window.setflags(write=False)
    return window


# ---------------------------------------------------------------------------- per column


def _columns_from_frames(frames: np.ndarray) -> np.ndarray:
    """(n, 800) pre-emphasised STFT frames -> (n, 80) normalised log-mel rows (float64).

    Every row is computed independently with the same operations, so the result for a frame
    does not depend on how many frames are passed together (stream == batch, bit for bit).
    """
    if len(frames) == 0:
        return np.zeros((0, N_MELS))
    spectrum = np.abs(np.fft.rfft(frames * _stft_window(), axis=1))  # (n, 401)
    # A stack of (1, 401) @ (401, 80) products: one matrix-vector product per frame, the
    # same call whatever n is (a single (n, 401) @ (401, 80) GEMM may change its summation
    # order with n).
    mel = np.matmul(spectrum[:, None, :], _projection())[:, 0, :]
    db = 20.0 * np.log10(np.maximum(MEL_FLOOR, mel)) - REF_LEVEL_DB
    scaled = (2.0 * MAX_ABS_VALUE) * ((db - MIN_LEVEL_DB) / (-MIN_LEVEL_DB)) - MAX_ABS_VALUE
    return np.asarray(np.clip(scaled, -MAX_ABS_VALUE, MAX_ABS_VALUE))


def preemphasis(wav: np.ndarray, previous: float = 0.0) -> np.ndarray:
    """``y[n] = x[n] - 0.97 x[n-1]`` in float64; ``previous`` is x[-1] (0 at a clip start)."""
    x = np.asarray(wav, dtype=np.float64)
    y = np.empty_like(x)
    if len(x) == 0:
        return y
    y[0] = x[0] - PREEMPHASIS * previous
    y[1:] = x[1:] - PREEMPHASIS * x[:-1]
    return y


# ---------------------------------------------------------------------------- batch


def frame_count(num_samples: int) -> int:
    """T = floor(n / 640): video frames of a clip of ``num_samples`` 16 kHz samples."""
    return max(0, int(num_samples)) // SAMPLES_PER_FRAME


def mel_frame_count(frames: int) -> int:
    """T_mel = 1 + floor(640 T / 200)."""
    return 1 + (SAMPLES_PER_FRAME * frames) // HOP


def cut_waveform(wav: np.ndarray) -> np.ndarray:
    """The official ``crop_pad_audio``: exactly 640 * T samples (the trailing rest dropped)."""
    wav = np.asarray(wav)
    if wav.ndim != 1:
        raise ValueError(f"expected a mono 1-D waveform, got shape {wav.shape}")
    return wav[: frame_count(len(wav)) * SAMPLES_PER_FRAME]


def log_mel(wav16k: np.ndarray) -> np.ndarray:
    """16 kHz mono waveform -> (T_mel, 80) float64 normalised log-mel (module docstring)."""
    y = preemphasis(cut_waveform(wav16k))
    padded = np.concatenate([np.zeros(PAD), y, np.zeros(PAD)])
    n_rows = 1 + len(y) // HOP
    starts = np.arange(n_rows) * HOP
    frames = padded[starts[:, None] + np.arange(N_FFT)[None, :]]
    return _columns_from_frames(frames)


def window_start(index: int) -> int:
    """First mel row of video frame ``index``: ``int(80 (i - 2) / 25)``, truncated toward 0."""
    q = 80 * (index - 2)
    return q // 25 if q >= 0 else -((-q) // 25)


def window_rows(index: int, last_row: int) -> np.ndarray:
    """The 16 mel row indices of frame ``index``'s window, clamped to ``[0, last_row]``."""
    start = window_start(index)
    return np.clip(np.arange(start, start + WINDOW_FRAMES), 0, max(0, last_row))


def mel_windows(mel: np.ndarray, frames: int) -> np.ndarray:
    """(T_mel, 80) log-mel -> (T, 80, 16) float32 windows, ``mel[rows].T`` per frame."""
    mel = np.asarray(mel)
    if mel.ndim != 2 or mel.shape[1] != N_MELS:
        raise ValueError(f"expected a (T_mel, {N_MELS}) log-mel, got shape {mel.shape}")
    out = np.empty((frames, N_MELS, WINDOW_FRAMES), dtype=np.float32)
    last = len(mel) - 1
    for i in range(frames):
        out[i] = mel[window_rows(i, last)].T
    return out
