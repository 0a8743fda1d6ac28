"""Capture in its own thread, so reading frames never waits on the model (and vice versa).

Two delivery modes:

- **latest-frame** (``drop=True``, the default for cameras and streams): the thread keeps only the
  newest frame.  A model slower than the camera then works on the freshest frame instead of an
  ever-growing backlog; every frame overwritten before the loop took it counts as *dropped*.
- **every frame** (``drop=False``, the default for files and folders): a small bounded queue; the
  thread blocks when it is full, so every frame is processed and an annotated video has exactly as
  many frames as its input.

A live stream whose ``read()`` fails is reopened with bounded exponential backoff; one that stays
down sets ``stats.stream_lost`` (a failure: ``sim2real live`` exits 1); a file's failed read is its
normal end.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np


@dataclass
class Backoff:
    """Bounded exponential backoff: ``base_s * factor**attempt``, at most ``max_s``, ``max_retries`` tries."""

    max_retries: int = 5
    base_s: float = 0.5
    factor: float = 2.0
    max_s: float = 8.0

    def delays(self):
        for attempt in range(self.max_retries):
            yield min(self.max_s, self.base_s * self.factor**attempt)


@dataclass
class Frame:
    index: int            # position in the source (dropped frames included)
    image: np.ndarray     # BGR from cv2 captures, RGB/gray from folders (see ``is_rgb``)
    wall_time: float      # time.time() when read
    is_rgb: bool = False
    media_time_s: float | None = None  # index / fps for files and folders
    prepared: Any = None               # what ``transform`` made of it (on the capture thread)
    prepare_ms: float | None = None
    t_read: float = 0.0                # time.perf_counter() when read (end-to-end latency starts here)


@dataclass
class CaptureStats:
    frames_read: int = 0
    dropped: int = 0
    retries: int = 0
    reconnects: int = 0
    end_reason: str = ""
    stream_lost: bool = False   # a live stream gave up after its retries (not a normal end)
    events: list[str] = field(default_factory=list)


_END = object()


class CaptureThread:
    """Reads frames from ``opener()`` captures on a background thread; ``get()`` hands them out.

    ``opener`` returns an opened capture (``read``/``release``/``get``) or raises; it is called
    once at ``start()`` (errors surface in the caller) and again for every reconnect attempt.
    ``pace_fps`` makes a file play at its own frame rate (to see latest-frame dropping on a file).
    ``transform(frame)`` (e.g. the model's preprocessing) runs on the capture thread, so it
    overlaps with the consumer's inference on the previous frame; its result is ``frame.prepared``.
    """

    def __init__(self, opener: Callable[[], Any], *, live: bool, drop: bool, backoff: Backoff | None = None,
                 pace_fps: float | None = None, fps: float | None = None, queue_size: int = 4,
                 name: str = "source", log: Callable[[str], None] = print,
                 transform: Callable[[Frame], Any] | None = None):
        self.opener, self.live, self.drop, self.transform = opener, live, drop, transform
        self.backoff = backoff or Backoff()
        self.pace_fps, self.fps, self.name, self.log = pace_fps, fps, name, log
        self.stats = CaptureStats()
        self._stop = threading.Event()
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, queue_size))
        self._cond = threading.Condition()
        self._latest: Frame | None = None
        self._ended = False
        self._cap = None
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self) -> "CaptureThread":
        self._cap = self.opener()
        self._thread = threading.Thread(target=self._run, name=f"capture:{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        # Unblock a producer waiting on a full queue.
        try:
            while True:
                self._queue.get_nowait()
        except queue.Empty:
            pass
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> "CaptureThread":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ---- consumer side ---------------------------------------------------------------------
    def get(self, timeout: float | None = None) -> Frame | None:
        """The next frame (latest one in drop mode); ``None`` once the source has ended."""
        if self.drop:
            with self._cond:
                ok = self._cond.wait_for(lambda: self._latest is not None or self._ended or self._stop.is_set(),
                                         timeout=timeout)
                if not ok:
                    raise TimeoutError(f"no frame from {self.name} within {timeout} s")
                frame, self._latest = self._latest, None
                return frame
        while True:
            try:
                item = self._queue.get(timeout=0.1 if timeout is None else timeout)
            except queue.Empty:
                if self._stop.is_set():
                    return None
                if timeout is not None:
                    raise TimeoutError(f"no frame from {self.name} within {timeout} s") from None
                continue
            return None if item is _END else item

    # ---- producer side ---------------------------------------------------------------------
    def _deliver(self, frame: Frame) -> None:
        if self.drop:
            with self._cond:
                if self._latest is not None:
                    self.stats.dropped += 1
                self._latest = frame
                self._cond.notify_all()
            return
        while not self._stop.is_set():
            try:
                self._queue.put(frame, timeout=0.1)
                return
            except queue.Full:
                continue

    def _finish(self, reason: str) -> None:
        self.stats.end_reason = reason
        with self._cond:
            self._ended = True
            self._cond.notify_all()
        if not self.drop:
            # The consumer may be slow; never block forever on a full queue at the end.
            while not self._stop.is_set():
                try:
                    self._queue.put(_END, timeout=0.1)
                    break
                except queue.Full:
                    continue

    def _reconnect(self) -> tuple[bool, Any]:
        """Reopen a dropped stream with backoff; return (ok, first frame)."""
        for attempt, delay in enumerate(self.backoff.delays(), start=1):
            self.stats.retries += 1
            msg = (f"[live] {self.name}: read failed; retry {attempt}/{self.backoff.max_retries} "
                   f"in {delay:.2f} s")
            self.stats.events.append(msg)
            self.log(msg)
            if self._stop.wait(delay):
                return False, None
            try:
                if self._cap is not None:
                    self._cap.release()
                self._cap = self.opener()
                ok, img = self._cap.read()
            except Exception as e:  # a reopen that raises is just a failed attempt
                self.stats.events.append(f"reopen failed: {e}")
                ok, img = False, None
            if ok and img is not None:
                self.stats.reconnects += 1
                self.log(f"[live] {self.name}: stream back after {attempt} retr{'y' if attempt == 1 else 'ies'}")
                return True, img
        return False, None

    def _frames(self):
        """Read (+ ``transform``) frames until the source ends or ``stop()``; the end reason is
        returned (``StopIteration.value``)."""
        index = 0
        t_next = time.perf_counter()
        while not self._stop.is_set():
            ok, img = self._cap.read()
            t_read = time.perf_counter()
            if not ok or img is None:
                if not self.live:
                    return "end of source"
                ok, img = self._reconnect()
                t_read = time.perf_counter()
                if not ok:
                    if self._stop.is_set():
                        break
                    reason = (f"stream {self.name} dropped and did not come back after "
                              f"{self.backoff.max_retries} retries")
                    self.stats.stream_lost = True
                    self.log(f"[live] {reason}; stopping and finalizing the outputs")
                    return reason
            media_t = index / self.fps if (self.fps and not self.live) else None
            frame = Frame(index, img, time.time(), bool(getattr(self._cap, "returns_rgb", False)), media_t,
                          t_read=t_read)
            if self.transform is not None:
                t0 = time.perf_counter()
                frame.prepared = self.transform(frame)
                frame.prepare_ms = (time.perf_counter() - t0) * 1e3
            self.stats.frames_read += 1
            yield frame
            index += 1
            if self.pace_fps:
                t_next += 1.0 / self.pace_fps
                wait = t_next - time.perf_counter()
                if wait > 0:
                    self._stop.wait(wait)
                else:
                    t_next = time.perf_counter()
        return "stopped"

    def _pump(self, deliver: Callable[[Frame], None]) -> None:
        reason = "stopped"
        try:
            gen = self._frames()
            while True:
                try:
                    frame = next(gen)
                except StopIteration as end:
                    reason = end.value or "stopped"
                    break
                deliver(frame)
        except BaseException as e:  # surfaced to the loop through .error
            self.error = e
            reason = f"capture error: {e}"
        finally:
            try:
                if self._cap is not None:
                    self._cap.release()
            finally:
                self._finish(reason)

    def _run(self) -> None:
        self._pump(self._deliver)

    def read_inline(self):
        """The single-thread alternative to ``start()`` + ``get()``: a generator of frames read (and
        transformed) on the caller's thread (the serial live loop); closing it or ``stop()`` ends it."""
        self._cap = self.opener()
        reason = "stopped"
        try:
            reason = (yield from self._frames()) or "stopped"
        except GeneratorExit:
            raise
        except Exception as e:  # noqa: BLE001 - surfaced to the loop through .error, as from the thread
            self.error = e
            reason = f"capture error: {e}"
        finally:
            try:
                if self._cap is not None:
                    self._cap.release()
            finally:
                self.stats.end_reason = reason
                self._ended = True
