"""Write the README pictures: docs/images/contact_sheet.png and docs/images/motion_plot.png.

Run from the repository root: ``.venv/bin/python scripts/make_readme_pictures.py``.

Both come from ONE run of the pipeline ``msadtalker render`` uses (``streamer.assembly.
stage_factory``: features -> lips -> silence -> motion -> mesh render) on the bundled English
sample speech with the bundled avatar at 512 px, seed 0:

* the contact sheet shows the frames at the extremes of that run (rest, head turned most
  left/right, nodding most down/up, rolled most either way, mouth widest open, a blink, a
  silent pause), each captioned with its time and what the motion asked for; a second row
  shows "full" mode (the whole photo) and, when matplotlib's sample data is installed, the
  same extremes on a second public-domain portrait (Grace Hopper, US Navy photo), to show the
  renderer is not tuned to one face;
* the motion plot is ``msadtalker render --plot`` of the same run.

``docs/images/vowels_before_after.png`` (the mouth, issue 14): for an open-mouthed photo (the
bundled avatar), a closed-mouthed one with glasses (Grace Hopper), the same shrunk to 112 px
and a group picture (the two public-domain portraits side by side; the largest face is
animated), the frames of held "ooo", "aaa" and "eee" (eSpeak NG phonemes through the whole
pipeline, head still) and the rest frame, rendered by the version in ``--before DIR`` (a
checkout of the previous commit, e.g. ``git worktree add /tmp/before HEAD``; the frames are
rendered there by running this script with that checkout's code) and by this one, side by
side. Without ``--before`` only this version's frames are drawn.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from msadtalker.avatar import default_avatar_path
from msadtalker.mesh.contact_sheet import contact_sheet
from streamer.assembly import stage_factory
from streamer.config import load_config
from streamer.io.audio_source import AudioFileSource
from streamer.io.plot import WaveformEnvelope, plot_trace
from streamer.io.trace import TraceWriter, read_trace
from streamer.offline import Sink, run_offline
from streamer.pipeline import Pipeline
from streamer.types import VideoFrame

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "msadtalker" / "assets" / "sample_speech_en.wav"
CELL = 240  # px per contact-sheet cell: the sheet stays around 1000 px wide

log = logging.getLogger("make_readme_pictures")


@dataclass
class Frames:
    """Sink keeping every frame of a run (a 12 s clip at 512 px is ~220 MB; fine here)."""

    frames: list[VideoFrame] = field(default_factory=list)

    def write(self, frame: VideoFrame) -> None:
        self.frames.append(frame)


def render(avatar: Path, size: int, mode: str, trace: Path | None = None) -> list[VideoFrame]:
    config = load_config(None, {"render.size": size, "render.mode": mode, "pipeline.seed": 0})
    source = AudioFileSource(SAMPLE)
    keep = Frames()
    sinks: list[Sink] = [keep]
    envelope = WaveformEnvelope()
    if trace is not None:
        sinks += [TraceWriter(trace), envelope]
    run_offline(Pipeline(stage_factory(config, avatar)()), source, sinks, progress=False)
    if trace is not None:
        plot_trace(read_trace(trace), envelope, trace.with_suffix(".png"), title=SAMPLE.name)
    return keep.frames


def extremes(frames: list[VideoFrame]) -> list[tuple[int, str]]:
    """(frame index, caption) of the frames worth showing, in a fixed order."""
    motion = [f.motion for f in frames]
    pitch = np.array([m.pose.pitch for m in motion])
    yaw = np.array([m.pose.yaw for m in motion])
    roll = np.array([m.pose.roll for m in motion])
    mouth = np.array([m.mouth_open for m in motion])
    blink = np.array([m.blink for m in motion])
    weight = np.array([m.silence.weight for m in motion])

    def at(i: int, what: str) -> tuple[int, str]:
        return int(i), f"{i / 25:.2f}s {what}"

    picks = [
        at(0, "rest"),
        at(int(np.argmin(yaw)), f"yaw {yaw.min():+.1f}"),
        at(int(np.argmax(yaw)), f"yaw {yaw.max():+.1f}"),
        at(int(np.argmax(pitch)), f"pitch {pitch.max():+.1f}"),
        at(int(np.argmin(pitch)), f"pitch {pitch.min():+.1f}"),
        at(int(np.argmax(roll)), f"roll {roll.max():+.1f}"),
        at(int(np.argmin(roll)), f"roll {roll.min():+.1f}"),
        at(int(np.argmax(mouth)), f"mouth {mouth.max():.2f}"),
    ]
    if blink.max() > 0.5:
        picks.append(at(int(np.argmax(blink)), "blink"))
    quiet = np.flatnonzero(weight == 0.0)
    quiet = quiet[quiet > len(frames) // 3]  # a pause after speech, not the silent lead-in
    if len(quiet):
        picks.append(at(int(quiet[len(quiet) // 2]), "pause"))
    return picks


def grace_hopper() -> Path | None:
    try:
        from matplotlib import cbook

        path = Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    except (ImportError, OSError, ValueError):
        return None
    return path if path.is_file() else None


def save_png(image: Image.Image, path: Path) -> None:
    """256-colour PNG: a third of the bytes of RGB, no visible change at README size."""
    dither = Image.Dither.FLOYDSTEINBERG
    palette = image.quantize(256, method=Image.Quantize.MEDIANCUT, dither=dither)
    palette.save(path, optimize=True)


VOWELS = (("rest", ""), ("ooo", "u:"), ("aaa", "A:"), ("eee", "i:"))
FACE_CELL = 150


def vowel_photos(folder: Path) -> list[tuple[str, Path]]:
    """The photos of the vowel sheet, written into ``folder`` (public-domain sources)."""
    photos = [("open mouth", default_avatar_path())]
    hopper = grace_hopper()
    if hopper is None:
        log.info("matplotlib sample data not found: closed-mouth rows left out")
        return photos
    photos.append(("closed, glasses", hopper))
    with Image.open(hopper) as im:
        small = im.convert("RGB")
        small = small.resize((112, round(112 * im.height / im.width)), Image.Resampling.LANCZOS)
    small.save(folder / "hopper_112.png")
    photos.append(("112 px photo", folder / "hopper_112.png"))
    with Image.open(default_avatar_path()) as a, Image.open(hopper) as h:
        group = Image.new("RGB", (760, 460), (214, 218, 222))
        group.paste(h.convert("RGB").resize((196, 230)), (30, 200))
        big = a.convert("RGB").resize((437, 437), Image.Resampling.LANCZOS)
        group.paste(big, (280, 12))
    group.save(folder / "group.png")
    photos.append(("group, largest", folder / "group.png"))
    return photos


def held_vowels() -> tuple[np.ndarray, dict[str, tuple[int, int]]]:
    """The held eSpeak NG vowels of ``VOWELS`` in one clip, the sequence twice with 0.4 s
    pauses (the lip source calibrates its levels on the first), 16 kHz; and each vowel's
    frame span in the second round."""
    from msadtalker.audio import load_audio

    pause = np.zeros(6400, np.float32)
    parts, spans, position = [pause], {}, len(pause)
    for round_ in range(2):
        for name, phoneme in VOWELS[1:]:
            with tempfile.TemporaryDirectory() as tmp:
                wav = Path(tmp) / "v.wav"
                subprocess.run(
                    ["espeak-ng", "-v", "en", "-s", "60", "-w", str(wav), f"[[{phoneme}]]"],
                    check=True,
                    capture_output=True,
                )
                vowel = np.asarray(load_audio(wav, warn=False), dtype=np.float32)
            if round_ == 1:
                spans[name] = (position // 640, (position + len(vowel)) // 640)
            parts += [vowel, pause]
            position += len(vowel) + len(pause)
    return np.concatenate(parts), spans


def vowel_frames(photo: Path, size: int = 256) -> list[np.ndarray]:
    """The frame of each of ``VOWELS``: the middle one of the frames of the held vowel that
    open the mouth with the eyes open (second round), head still; "rest" is frame 0."""
    from streamer.types import AudioChunk

    config = load_config(None, {"render.size": size, "render.still": True, "pipeline.seed": 0})
    audio, spans = held_vowels()
    chunks = [AudioChunk(audio[i : i + 3200], i) for i in range(0, len(audio), 3200)]
    frames: list[VideoFrame] = list(Pipeline(stage_factory(config, photo)()).run(chunks))
    out = [np.asarray(frames[0].image)]
    for name, _ in VOWELS[1:]:
        start, end = spans[name]
        opened = [
            k
            for k in range(start, min(end, len(frames)))
            if frames[k].motion.mouth_open > 0.1 and frames[k].motion.blink < 0.05
        ]
        pick = opened[len(opened) // 2] if opened else (start + end) // 2
        out.append(np.asarray(frames[pick].image))
    return out


def vowel_sheet(rows: list[tuple[str, list[np.ndarray], list[np.ndarray] | None]]) -> np.ndarray:
    cells, captions = [], []
    for label, after, before in rows:
        if before is not None:
            for (name, _), image in zip(VOWELS, before, strict=True):
                cells.append(_face_cut(image))
                captions.append(f"before {name}")
        for (name, _), image in zip(VOWELS, after, strict=True):
            cells.append(_face_cut(image))
            captions.append(f"{label}: {name}" if name == "rest" else f"after {name}")
    columns = 8 if rows and rows[0][2] is not None else 4
    return contact_sheet(cells, columns=columns, captions=captions, cell=FACE_CELL)


def _face_cut(image: np.ndarray) -> np.ndarray:
    """The lower two thirds of the crop's middle: eyes, nose, mouth, chin."""
    h, w = image.shape[:2]
    return image[int(0.3 * h) : int(0.92 * h), int(0.19 * w) : int(0.81 * w)]


def render_vowels_here(out: Path, folder: Path) -> None:
    """Render every photo's vowel frames with the code this interpreter imports; save .npz."""
    arrays: dict[str, np.ndarray] = {}
    for i, (_, photo) in enumerate(vowel_photos(folder)):
        for k, image in enumerate(vowel_frames(photo)):
            arrays[f"p{i}_v{k}"] = image
    np.savez_compressed(out, allow_pickle=False, **arrays)


def before_frames(checkout: Path, folder: Path) -> dict[str, np.ndarray]:
    """The vowel frames rendered by the code in ``checkout`` (this script, run there)."""
    script = folder / "render_vowels.py"
    shutil.copy(Path(__file__), script)
    out = folder / "before.npz"
    env = {**os.environ, "PYTHONPATH": str(checkout), "MSADTALKER_CACHE": str(folder / "cache")}
    subprocess.run(
        [sys.executable, str(script), "--render-vowels", str(out), "--photos", str(folder)],
        check=True,
        cwd=checkout,
        env=env,
    )
    with np.load(out) as data:
        return {k: data[k] for k in data.files}


def make_vowel_sheet(out: Path, before: Path | None) -> None:
    if shutil.which("espeak-ng") is None:
        log.info("espeak-ng not found: vowel sheet left out")
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        photos = vowel_photos(folder)
        old = before_frames(before, folder) if before is not None else None
        rows = []
        for i, (label, photo) in enumerate(photos):
            after = vowel_frames(photo)
            previous = None
            if old is not None:
                previous = [old[f"p{i}_v{k}"] for k in range(len(VOWELS))]
            rows.append((label, after, previous))
    save_png(Image.fromarray(vowel_sheet(rows)), out / "vowels_before_after.png")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images")
    parser.add_argument(
        "--before", type=Path, metavar="DIR", help="checkout of the previous version"
    )
    parser.add_argument("--vowels-only", action="store_true", help="only the vowel sheet")
    parser.add_argument("--render-vowels", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--photos", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.render_vowels is not None:
        render_vowels_here(args.render_vowels, args.photos)
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    make_vowel_sheet(args.out, args.before)
    if args.vowels_only:
        return 0

    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "motion.csv"
        frames = render(default_avatar_path(), 512, "crop", trace)
        plot = Path(tmp) / "motion.png"
        with Image.open(plot) as im:
            # Modest size for the README: ~1000 px wide.
            scale = 1000 / im.width
            small = im.convert("RGB").resize(
                (1000, round(im.height * scale)), Image.Resampling.LANCZOS
            )
            save_png(small, args.out / "motion_plot.png")

    picks = extremes(frames)
    cells = [frames[i].image for i, _ in picks]
    captions = [c for _, c in picks]
    # Full mode on the same run's most turned frames: the body and background stay put.
    full = render(default_avatar_path(), 256, "full")
    for i, caption in picks[1:3]:
        cells.append(full[i].image)
        captions.append(f"full {caption.split(' ', 1)[1]}")
    second = grace_hopper()
    if second is not None:
        other = render(second, 512, "crop")
        chosen = extremes(other)
        for i, caption in [chosen[k] for k in (1, 2, 3, 4, 5, 7)]:
            cells.append(other[i].image)
            captions.append(f"GH {caption.split(' ', 1)[1]}")
    else:
        log.info("matplotlib sample data not found: second portrait left out")
    sheet = contact_sheet(cells, columns=6, captions=captions, cell=CELL)
    save_png(Image.fromarray(sheet), args.out / "contact_sheet.png")
    for name in ("contact_sheet.png", "motion_plot.png"):
        path = args.out / name
        log.info("%s: %d KB", path, path.stat().st_size // 1024)
    return 0


if __name__ == "__main__":
    sys.exit(main())
