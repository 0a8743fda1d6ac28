"""Unlabelled real footage: a video file or a folder of frames, sampled by stride.

Iterating a footage reader yields ``(frame_index, image)`` with images in the package layout
(uint8 RGB or 2-D gray, see :mod:`sim2real.data.images`).  Frames that cannot be decoded are
skipped and counted (``reader.skipped``), and a warning is logged once the pass ends, because one
bad frame in minutes of footage should not stop an adaptation run, but must not go unnoticed.

``frames`` restricts which frame indices may be read (``range(0, 100)``, a list, or ``None`` for
all).  Some sequences have frames reserved for evaluation
(:data:`sim2real.data.protected_frames.PROTECTED_FRAMES`); reading
those needs ``allow_protected=True`` so they cannot leak into training by accident.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Collection, Iterator

import cv2
import numpy as np

from sim2real.data.images import ImageReadError, load_image, normalize_image
from sim2real.data.protected_frames import PROTECTED_FRAMES, register_protected_frames
from sim2real.data.real import RealDataError, list_images

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".avi", ".mp4", ".mkv", ".mov", ".m4v", ".webm", ".mpg", ".mpeg", ".wmv", ".ogv")


class FootageError(RealDataError):
    """Footage cannot be opened or contains no readable frame."""


class ProtectedFramesError(RealDataError):
    """A reader was asked for frames reserved for evaluation."""


@dataclass
class FootageReport:
    source: str
    read: int = 0
    skipped: list[tuple[int, str]] = field(default_factory=list)
    ended_early: str | None = None

    def to_dict(self) -> dict:
        return {"source": self.source, "read": self.read, "skipped": len(self.skipped),
                "skipped_frames": [i for i, _ in self.skipped], "ended_early": self.ended_early}


def _frame_filter(frames: Collection[int] | range | tuple | None) -> Collection[int] | None:
    if isinstance(frames, range) and frames.step < 1:
        raise ValueError(f"a frame range must count upwards, got {frames}")
    if frames is None or isinstance(frames, range):
        return frames
    if isinstance(frames, tuple) and len(frames) == 2 and all(isinstance(v, int) for v in frames):
        return range(frames[0], frames[1])  # (start, stop), stop exclusive
    return frozenset(int(f) for f in frames)


def _check_protected(folder: Path, frames: Collection[int] | None, allow: bool) -> None:
    if allow:
        return
    # Re-registered on every check: the sequence folders follow their environment variables.
    register_protected_frames()
    try:
        key = folder.resolve()
    except OSError:
        return
    prot = PROTECTED_FRAMES.get(key)
    if prot is None:
        return
    if frames is None:
        bad = True
    elif isinstance(frames, range) and frames.step == 1:
        bad = max(frames.start, prot.start) < min(frames.stop, prot.stop)
    else:
        bad = any(f in prot for f in frames)
    if bad:
        raise ProtectedFramesError(
            f"{folder}: frames {prot.start}-{prot.stop - 1} are evaluation-only and must not feed training, "
            f"adaptation or tuning; pass an explicit frame range outside them (asked for "
            f"{'all frames' if frames is None else _describe(frames)}), or allow_protected=True "
            "(visp_cube_footage: allow_eval=True) for the final evaluation only")


def _describe(frames: Collection[int]) -> str:
    if isinstance(frames, range):
        return f"range({frames.start}, {frames.stop}" + (f", {frames.step})" if frames.step != 1 else ")")
    s = sorted(frames)
    return f"{len(s)} frames {s[0]}..{s[-1]}" if s else "no frames"


class Footage:
    """Base: iterate ``(frame_index, image)``; ``report`` describes the last pass."""

    source: Path

    def __init__(self, source: str | Path, stride: int = 1, frames=None, max_frames: int | None = None):
        if not isinstance(stride, int) or stride < 1:
            raise ValueError(f"stride must be an integer >= 1, got {stride!r}")
        if max_frames is not None and max_frames < 1:
            raise ValueError(f"max_frames must be >= 1 or None, got {max_frames!r}")
        self.source = Path(source)
        self.stride = stride
        self.frames = _frame_filter(frames)
        self.max_frames = max_frames
        self.report = FootageReport(str(self.source))

    @property
    def skipped(self) -> int:
        return len(self.report.skipped)

    def _wanted(self, position: int) -> bool:
        """``position`` counts candidate frames inside ``frames``; the stride applies to it."""
        return position % self.stride == 0

    def _finish(self) -> None:
        r = self.report
        if r.skipped:
            shown = ", ".join(f"{i} ({why})" for i, why in r.skipped[:5])
            log.warning("%s: skipped %d unreadable frame(s): %s%s", r.source, len(r.skipped), shown,
                        " ..." if len(r.skipped) > 5 else "")
        if r.ended_early:
            log.warning("%s: %s", r.source, r.ended_early)
        if r.read == 0:
            raise FootageError(f"{r.source}: no readable frame" + (
                f" ({len(r.skipped)} unreadable)" if r.skipped else " in the requested range"))

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        raise NotImplementedError

    def read_all(self) -> list[tuple[int, np.ndarray]]:
        return list(self)


class FrameFolderFootage(Footage):
    """A folder of frame images; the frame index is the number in the file name
    (``image0042.pgm`` -> 42) when every file has one, else the position in natural order."""

    def __init__(self, folder: str | Path, stride: int = 1, frames=None, max_frames: int | None = None,
                 allow_protected: bool = False, depth16: str = "shift"):
        super().__init__(folder, stride, frames, max_frames)
        self.depth16 = depth16
        files = list_images(self.source)
        if not files:
            raise FootageError(f"{self.source}: folder contains no image files")
        _check_protected(self.source, self.frames, allow_protected)
        numbers = [re.findall(r"\d+", f.stem) for f in files]
        if all(numbers) and len({int(n[-1]) for n in numbers}) == len(files):
            indexed = sorted(((int(n[-1]), f) for n, f in zip(numbers, files)), key=lambda t: t[0])
        else:
            indexed = list(enumerate(files))
        if self.frames is not None:
            indexed = [(i, f) for i, f in indexed if i in self.frames]
        if not indexed:
            raise FootageError(f"{self.source}: no frame in the requested range {_describe(self.frames)}")
        self.indexed = indexed

    def __len__(self) -> int:
        n = len(range(0, len(self.indexed), self.stride))
        return min(n, self.max_frames) if self.max_frames else n

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        self.report = FootageReport(str(self.source))
        for pos, (index, path) in enumerate(self.indexed):
            if not self._wanted(pos):
                continue
            if self.max_frames and self.report.read >= self.max_frames:
                break
            try:
                img = load_image(path, depth16=self.depth16)
            except ImageReadError as e:
                self.report.skipped.append((index, f"{path.name}: {e.reason}"))
                continue
            self.report.read += 1
            yield index, img
        self._finish()


class VideoFootage(Footage):
    """A video file read with ``cv2.VideoCapture``; the frame index is the position in the stream."""

    MAX_CORRUPT_RUN = 25  # consecutive undecodable frames before the stream counts as ended

    def __init__(self, path: str | Path, stride: int = 1, frames=None, max_frames: int | None = None):
        super().__init__(path, stride, frames, max_frames)
        if not self.source.is_file():
            raise FootageError(f"video file {self.source} " + ("is not a file" if self.source.exists()
                                                                else "does not exist"))
        cap = self._open()
        self.frame_count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        cap.release()

    def _open(self) -> cv2.VideoCapture:
        cap = cv2.VideoCapture(str(self.source))
        if not cap.isOpened():
            cap.release()
            raise FootageError(f"cannot open video {self.source} (unsupported codec/container or corrupt file)")
        return cap

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        self.report = FootageReport(str(self.source))
        cap = self._open()
        try:
            index, position = -1, 0
            stop = None
            if isinstance(self.frames, range):
                stop = self.frames.stop
                # Seeking is not frame-exact for every codec, so skip by grabbing instead
                # (a failed grab still consumes its frame, so the count stays right).
                for _ in range(self.frames.start):
                    cap.grab()
                index = self.frames.start - 1
            elif self.frames is not None:
                stop = max(self.frames, default=-1) + 1
            run: list[int] = []     # consecutive undecodable frames: mid-stream damage or the end?
            pending: list[int] = []  # ... of them, the ones the stride asked for
            while True:
                if self.max_frames and self.report.read >= self.max_frames:
                    break
                if stop is not None and index + 1 >= stop:
                    break
                if not cap.grab():
                    # A corrupt frame fails its grab and the next grab returns the frame after it;
                    # at the real end every grab fails.  Only a container that announces more
                    # frames is worth probing, and a long run of failures means the stream ended.
                    at_end = not self.frame_count or index + 1 >= self.frame_count
                    if at_end or len(run) >= self.MAX_CORRUPT_RUN:
                        if run or (self.frame_count and index + 1 < self.frame_count):
                            first = run[0] if run else index + 1
                            self.report.ended_early = (f"stream ended at frame {first} of the "
                                                       f"{self.frame_count} the container announces")
                        break
                    index += 1
                    run.append(index)
                    if self.frames is None or index in self.frames:
                        if self._wanted(position):  # a bad frame keeps its place in the stride grid
                            pending.append(index)
                        position += 1
                    continue
                index += 1
                self.report.skipped.extend((i, "frame could not be decoded") for i in pending)
                run, pending = [], []
                if self.frames is not None and index not in self.frames:
                    continue
                wanted = self._wanted(position)
                position += 1
                if not wanted:
                    continue
                ok, frame = cap.retrieve()
                if not ok or frame is None or frame.size == 0:
                    self.report.skipped.append((index, "frame could not be decoded"))
                    continue
                self.report.read += 1
                yield index, normalize_image(frame, path=self.source)
        finally:
            cap.release()
        self._finish()


def open_footage(source: str | Path, stride: int = 1, frames=None, max_frames: int | None = None,
                 allow_protected: bool = False) -> Footage:
    """A folder -> :class:`FrameFolderFootage`, a file -> :class:`VideoFootage`."""
    p = Path(source)
    if p.is_dir():
        return FrameFolderFootage(p, stride, frames, max_frames, allow_protected=allow_protected)
    if p.is_file():
        if p.suffix.lower() not in VIDEO_SUFFIXES:
            log.info("%s: unusual video suffix %r, trying cv2.VideoCapture anyway", p, p.suffix)
        return VideoFootage(p, stride, frames, max_frames)
    raise FootageError(f"footage {p} does not exist (expected a video file or a folder of frames)")
