"""Audio front end: file decoding (streamed, 16 kHz mono), SadTalker's log-mel (batch and
incremental) and the per-video-frame mel windows."""

from msadtalker.audio.decode import (
    AudioInfo,
    iter_audio_file,
    load_audio,
    resampled_length,
    scan_audio,
)
from msadtalker.audio.mel import (
    N_MELS,
    WINDOW_FRAMES,
    cut_waveform,
    frame_count,
    log_mel,
    mel_filterbank,
    mel_frame_count,
    mel_windows,
    window_rows,
    window_start,
)
from msadtalker.audio.mel_stream import MelStream

__all__ = [
    "N_MELS",
    "WINDOW_FRAMES",
    "AudioInfo",
    "MelStream",
    "cut_waveform",
    "frame_count",
    "iter_audio_file",
    "load_audio",
    "log_mel",
    "mel_filterbank",
    "mel_frame_count",
    "mel_windows",
    "resampled_length",
    "scan_audio",
    "window_rows",
    "window_start",
]
