"""Offline batch inference (``sim2real predict`` on folders, COCO sets and video files) on the live
loop's fast path: a reader thread decodes and resizes the images (``backend.prepare``: uint8, one
cv2 resize) into batches while the backend runs the previous batch (normalisation in the model),
then the one numpy decoder.  Every image is processed, in order (files are not live: nothing is
dropped)."""

from __future__ import annotations

import queue
import threading
from typing import Any, Iterable, Iterator

import numpy as np

from sim2real.deploy.backends import InferenceBackend
from sim2real.deploy.predictions import decode_outputs
from sim2real.eval.instances import select

_END = object()


def predict_frames(backend: InferenceBackend, images: Iterable[tuple[Any, np.ndarray]], batch_size: int = 16,
                   score_thresh: float | None = None, read_ahead: int = 2) -> Iterator[tuple[Any, dict]]:
    """``(key, RGB/gray image)`` pairs -> ``(key, instances)`` (ORIGINAL pixels, at or above
    ``score_thresh``, default the model's), like :func:`sim2real.eval.predict.predict_arrays`.
    At most ``read_ahead`` prepared batches wait in memory, so a long video streams."""
    thr = backend.score_thresh if score_thresh is None else float(score_thresh)
    q: queue.Queue = queue.Queue(maxsize=max(1, read_ahead))
    stop = threading.Event()
    failure: list[BaseException] = []

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def reader() -> None:
        keys, xs, metas = [], [], []
        try:
            for key, img in images:
                x, meta = backend.prepare(img)
                keys.append(key), xs.append(x), metas.append(meta)
                if len(xs) == batch_size:
                    if not put((keys, np.stack(xs), metas)):
                        return
                    keys, xs, metas = [], [], []
            if xs:
                put((keys, np.stack(xs), metas))
        except BaseException as e:  # raised on the caller's thread
            failure.append(e)
        finally:
            put(_END)

    thread = threading.Thread(target=reader, name="predict:read", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _END:
                break
            keys, batch, metas = item
            pred = decode_outputs(backend(batch), metas, thr, **backend.decode_options)
            for j, key in enumerate(keys):
                yield key, select(pred, j)
        if failure:
            raise failure[0]
    finally:
        stop.set()
        thread.join(5.0)
