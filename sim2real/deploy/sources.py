"""Where live frames come from: a camera index, a video file, a network stream or a folder of frames.

``parse_source`` says what kind a ``--source`` string is; ``open_source`` returns an opened
capture object with the ``cv2.VideoCapture`` surface the capture thread uses (``read``,
``release``, ``get``).  A folder of frames is read with the package's own ``load_image`` so a
gray PGM reaches the model exactly as it does in training.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import cv2
import numpy as np

from sim2real.data.images import IMAGE_SUFFIXES, ImageReadError, load_image
from sim2real.data.real import list_images

_VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".m4v", ".webm", ".mpg", ".mpeg")
_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


class SourceError(ValueError):
    """A live source cannot be opened (names the source and what was tried)."""


@dataclass(frozen=True)
class SourceSpec:
    """A parsed ``--source``: ``kind`` is "device", "stream", "file" or "folder"."""

    kind: str
    target: str | int
    text: str

    @property
    def is_live(self) -> bool:
        """Live sources produce frames on their own clock: stale frames may be dropped and
        a failed read means the stream dropped (retry), not the end of the data.  An http(s)
        URL of a video file (``.../clip.mp4``) is a remote file: its end is the end."""
        if self.kind == "stream":
            path = urlparse(str(self.target)).path.lower()
            return not (str(self.target).lower().startswith(("http:", "https:")) and path.endswith(_VIDEO_SUFFIXES))
        return self.kind == "device"


def parse_source(text: str | int) -> SourceSpec:
    s = str(text).strip()
    if not s:
        raise SourceError("--source is empty: expected a camera index (0), a video file, "
                          "an rtsp/http URL or a folder of frames")
    if s.isdigit():
        return SourceSpec("device", int(s), s)
    if _URL.match(s):
        return SourceSpec("stream", s, s)
    p = Path(s).expanduser()
    if p.is_dir():
        return SourceSpec("folder", str(p), s)
    if p.is_file():
        return SourceSpec("file", str(p), s)
    raise SourceError(f"source {s!r} does not exist: expected a camera index (0), a video file, "
                      f"an rtsp/http URL or a folder of frames")


class FolderCapture:
    """A folder of image files, in natural name order (img2 before img10), behind the ``cv2.VideoCapture`` surface.

    Frames come back as the package layout (RGB or 2-D gray, from ``load_image``); the capture
    thread marks them so they are not colour-converted a second time.
    """

    returns_rgb = True

    def __init__(self, folder: str | Path, fps: float = 30.0, log=print):
        self.folder = Path(folder)
        self.files = list_images(self.folder)
        self.fps = float(fps)
        self.log = log
        self.skipped: list[str] = []
        self._next = 0

    def isOpened(self) -> bool:  # noqa: N802 - cv2 naming
        return bool(self.files)

    def read(self) -> tuple[bool, np.ndarray | None]:
        # A corrupt frame is skipped (and said), like a camera's torn frame: one bad file must not
        # end a long run.
        while self._next < len(self.files):
            path = self.files[self._next]
            self._next += 1
            try:
                return True, load_image(path)
            except ImageReadError as e:
                self.skipped.append(str(path))
                self.log(f"[live] skipping unreadable frame: {e}")
        return False, None

    def get(self, prop: int) -> float:
        if prop == cv2.CAP_PROP_FPS:
            return self.fps
        if prop == cv2.CAP_PROP_FRAME_COUNT:
            return float(len(self.files))
        if prop == cv2.CAP_PROP_POS_FRAMES:
            return float(self._next)
        return 0.0

    def release(self) -> None:
        self._next = len(self.files)


def open_source(spec: SourceSpec, folder_fps: float = 30.0, stream_timeout_s: float = 10.0, log=print):
    """An opened capture for ``spec``, or :class:`SourceError` naming the source.

    Network streams get open/read timeouts, so a stalled stream makes ``read()`` fail (and the
    capture thread retry) instead of blocking forever."""
    if spec.kind == "folder":
        cap = FolderCapture(spec.target, fps=folder_fps, log=log)
        if not cap.isOpened():
            raise SourceError(f"source folder {spec.text} holds no image files "
                              f"(looked for {', '.join(IMAGE_SUFFIXES)})")
        return cap
    if spec.kind == "stream" and stream_timeout_s > 0:
        ms = int(stream_timeout_s * 1000)
        cap = cv2.VideoCapture(spec.target, cv2.CAP_FFMPEG,
                               [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms])
    else:
        cap = cv2.VideoCapture(spec.target)
    if not cap.isOpened():
        cap.release()
        hint = {
            "device": "is a camera plugged in, and is it free (not used by another program)?",
            "stream": "is the URL right and the stream reachable from this machine?",
            "file": "is it a video format this OpenCV build can decode (FFmpeg)?",
        }[spec.kind]
        raise SourceError(f"cannot open {spec.kind} source {spec.text!r}: {hint}")
    return cap


def source_fps(cap, default: float = 30.0) -> float:
    """The source's frame rate, or ``default`` when the source does not say (many cameras)."""
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    return fps if 1.0 <= fps <= 1000.0 else default
