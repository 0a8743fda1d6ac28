"""Importing pybullet and opening clients without its banners on stdout and stderr.

pybullet's C code prints ``pybullet build time: ...`` (stderr) on import and ``argv[0]=``
(stdout) on every DIRECT connect, straight to the file descriptors, which garbles the output of
CLIs and benchmarks that print tables.  Both are silenced by pointing fds 1 and 2 at /dev/null for
the duration of the call (C stdio is flushed first, so nothing buffered leaks out afterwards).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from typing import Iterator

try:
    _LIBC = ctypes.CDLL(None)  # the process's C library: flushing its stdio buffers
except OSError:  # platforms without dlopen(NULL)
    _LIBC = None


def _flush_c_stdio() -> None:
    if _LIBC is not None:
        _LIBC.fflush(None)


@contextlib.contextmanager
def quiet_output() -> Iterator[None]:
    """Discard whatever C code writes to fds 1 and 2 inside the block."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, ValueError):
            pass
    saved = {}
    try:
        for fd in (1, 2):
            saved[fd] = os.dup(fd)
    except OSError:  # a closed fd: nothing to protect there
        pass
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        _flush_c_stdio()
        for fd in saved:
            os.dup2(devnull, fd)
        yield
    finally:
        _flush_c_stdio()
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
        os.close(devnull)


with quiet_output():
    import pybullet  # noqa: E402  (prints its build time on first import)

from pybullet_utils import bullet_client  # noqa: E402


def connect() -> bullet_client.BulletClient:
    """A new DIRECT (in-process, no GUI) client."""
    with quiet_output():
        return bullet_client.BulletClient(connection_mode=pybullet.DIRECT)
