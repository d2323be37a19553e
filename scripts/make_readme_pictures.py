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
"""

from __future__ import annotations

import argparse
import logging
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args.out.mkdir(parents=True, exist_ok=True)

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
