"""Annotated-video output that is always a finished, playable file.

Frames go to a temporary file next to the target; ``close()`` releases the ``cv2.VideoWriter``
(which writes the container index) and renames it into place, so a reader never sees a
half-written video, and a loop stopped by Ctrl-C still leaves a playable one (call ``close`` in a
``finally``).  mp4 uses the ``mp4v`` codec; when this OpenCV build cannot write it the video falls
back to Motion-JPEG in an ``.avi`` next to the requested path, and says so.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from sim2real.io import OutputError, check_regular_target, check_writable, output_error

_CODECS = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "MJPG"}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class VideoOutput:
    """Lazy writer: opens on the first frame (its size fixes the video size)."""

    def __init__(self, path: str | Path, fps: float, log: Callable[[str], None] = print):
        self.requested = Path(path)
        if self.requested.suffix.lower() not in _CODECS:
            raise OutputError(0, f"--output {self.requested}: expected a .mp4 or .avi file name")
        self.fps = float(fps)
        self.log = log
        self.path: Path | None = None   # final path (may differ from requested after a fallback)
        self.frames = 0
        self.fourcc = ""
        self._tmp: Path | None = None
        self._writer: cv2.VideoWriter | None = None
        self._size: tuple[int, int] | None = None
        check_regular_target(self.requested)
        try:  # fail before the first frame, not at it, when the folder cannot take the video
            check_writable(self.requested.parent)
        except OutputError as e:
            raise OutputError(e.errno, f"--output {self.requested}: {e.strerror}") from None

    def _try_open(self, final: Path, fourcc: str, size: tuple[int, int]) -> bool:
        try:
            fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=final.suffix)
            os.close(fd)
        except OSError as e:
            raise output_error(e, final) from None
        writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*fourcc), self.fps, size)
        if writer.isOpened():
            self._writer, self._tmp, self.path, self.fourcc = writer, Path(tmp), final, fourcc
            return True
        writer.release()
        Path(tmp).unlink(missing_ok=True)
        return False

    def _open(self, size: tuple[int, int]) -> None:
        suffix = self.requested.suffix.lower()
        if self._try_open(self.requested, _CODECS[suffix], size):
            return
        if suffix != ".avi":
            fallback = self.requested.with_suffix(".avi")
            if self._try_open(fallback, "MJPG", size):
                self.log(f"[live] this OpenCV build cannot write {_CODECS[suffix]} {suffix}; "
                         f"writing Motion-JPEG to {fallback} instead")
                return
        raise OutputError(0, f"cannot open a video writer for {self.requested} "
                             f"(tried {_CODECS[suffix]}{' and MJPG .avi' if suffix != '.avi' else ''})")

    def write(self, frame_bgr: np.ndarray) -> None:
        if frame_bgr.ndim == 2:
            frame_bgr = cv2.cvtColor(frame_bgr, cv2.COLOR_GRAY2BGR)
        h, w = frame_bgr.shape[:2]
        if self._writer is None:
            self._size = (w, h)
            self._open(self._size)
        elif (w, h) != self._size:
            # A stream that reconnects at another resolution: keep one size per file.
            frame_bgr = cv2.resize(frame_bgr, self._size, interpolation=cv2.INTER_AREA)
        self._writer.write(np.ascontiguousarray(frame_bgr))
        self.frames += 1

    def close(self) -> Path | None:
        """Release and move into place; returns the final path (None if no frame was written)."""
        if self._writer is None:
            return None
        self._writer.release()
        self._writer = None
        try:
            # OpenCV's writer never reports a failed write: an empty file after frames were written
            # means the disk took nothing (full, or gone).
            if self.frames and os.path.getsize(self._tmp) == 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            os.chmod(self._tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a video is a normal file
            complete = self._readable(self._tmp)
            os.replace(self._tmp, self.path)
        except OSError as e:
            Path(self._tmp).unlink(missing_ok=True)
            raise output_error(e, self.path, detail=f"{self.frames} frames") from None
        if not complete:
            # Kept (it may hold some frames), but said: a full disk cut the container short.
            raise OutputError(errno.EIO, f"cannot write {self.path}: the video is incomplete and may not play "
                                         f"(OpenCV wrote {self.frames} frames without reporting an error; "
                                         "is the disk full?)")
        return self.path

    @staticmethod
    def _readable(path) -> bool:
        cap = cv2.VideoCapture(str(path))
        try:
            return bool(cap.isOpened() and cap.read()[0])
        finally:
            cap.release()

    def __enter__(self) -> "VideoOutput":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
