"""Atomic file writes: a reader (or a resumed run) never sees half a file.

Write to a temporary file in the same folder, fsync, then ``os.replace`` — rename is atomic on
POSIX, so a killed process leaves either the old file or the new one, never a torn one.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any, Iterator


class OutputError(OSError):
    """An output location cannot be written (missing permission, disk full, ...)."""

    def __str__(self) -> str:  # the one-line message, without OSError's "[Errno N] " prefix
        return self.strerror if self.strerror else super().__str__()


# What the user can do about the usual OS errors of an output location.
_HINTS = {errno.ENOSPC: "the disk is full: free space or write elsewhere",
          errno.EDQUOT: "the disk quota is exceeded: free space or write elsewhere",
          errno.EROFS: "the file system is read-only: write elsewhere",
          errno.EACCES: "no permission to write there: write elsewhere or fix the permissions",
          errno.EPERM: "no permission to write there: write elsewhere or fix the permissions",
          errno.EFBIG: "the file is larger than this file system allows"}


def output_error(e: OSError, path: str | Path, what: str = "cannot write", detail: str = "") -> OutputError:
    """``e`` (an OS error while writing ``path``) as a one-line :class:`OutputError` naming the path."""
    if isinstance(e, OutputError):
        return e
    reason = e.strerror or str(e)
    hint = _HINTS.get(e.errno)
    return OutputError(e.errno, f"{what} {path}: {reason}{f' ({detail})' if detail else ''}"
                                f"{f'; {hint}' if hint else ''}")


def check_regular_target(path: str | Path) -> Path:
    """``path`` if it is absent or a regular file; anything else is an :class:`OutputError`.

    An atomic write replaces the target by renaming a new file over it: a symlink, FIFO, device or
    folder given as an output would silently become a regular file (or the rename would fail late).
    """
    path = Path(path)
    if os.path.lexists(path) and (path.is_symlink() or not path.is_file()):
        kind = ("a symbolic link" if path.is_symlink() else "a folder" if path.is_dir()
                else "a FIFO" if stat.S_ISFIFO(path.stat().st_mode) else "a device or special file")
        raise OutputError(errno.EEXIST, f"output {path} is {kind}, not a regular file: refusing to replace it "
                                        f"(give the path of a regular file)")
    return path


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` atomically.

    ``suffix`` keeps the extension for writers that infer the format from it (cv2.imwrite).
    """
    path = Path(path)
    check_regular_target(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix or path.suffix or ".tmp")
        # mkstemp makes 0600 files; outputs should get the usual permissions (0666 & ~umask).
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        os.close(fd)
    except OSError as e:
        raise output_error(e, path.parent, "cannot write to") from None
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    except OSError as e:
        tmp_path.unlink(missing_ok=True)
        raise output_error(e, path) from None
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any, indent: int | None = None) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=False))


def append_jsonl(path: str | Path, record: dict) -> None:
    """Append one JSON line and flush it to disk (metrics logs survive a kill)."""
    path = Path(path)
    line = json.dumps(record) + "\n"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as e:
        raise output_error(e, path, "cannot append to") from None


class JsonlWriter:
    """A JSONL file written line by line, each line flushed as it is written.

    Any OS error (disk full, read-only, ...) is an :class:`OutputError` naming the file and how many
    lines it already holds; those lines stay on disk (a torn last line is skipped by :func:`read_jsonl`).
    """

    def __init__(self, path: str | Path, name: str = ""):
        self.path = Path(path)
        self.name = f"{name} " if name else ""
        self.lines = 0
        self._fh = None
        check_regular_target(self.path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "w", encoding="utf-8")
        except OSError as e:
            raise output_error(e, f"{self.name}{self.path}") from None

    def write(self, record: dict) -> None:
        if self._fh is None:
            raise OutputError(errno.EBADF, f"{self.name}{self.path} is closed")
        try:
            self._fh.write(json.dumps(record) + "\n")
            self._fh.flush()
        except OSError as e:
            self.close()
            raise output_error(e, f"{self.name}{self.path}",
                               detail=f"the {self.lines} line(s) written before are kept") from None
        self.lines += 1

    def close(self) -> None:
        """Close; a buffered tail that cannot be flushed any more (disk full) is dropped, not raised:
        every complete line was flushed when it was written."""
        fh, self._fh = self._fh, None
        if fh is not None:
            try:
                fh.close()
            except OSError:
                pass

    def __enter__(self) -> "JsonlWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_jsonl(path: str | Path) -> list[dict]:
    """Read a JSONL file; a torn last line (killed mid-write) is ignored."""
    out = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return out


def check_writable(folder: str | Path) -> Path:
    """Create ``folder`` if needed and prove it is writable, with an error that names it."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".writable.")
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        hint = _HINTS.get(e.errno)
        raise OutputError(e.errno, f"output folder {folder} is not writable: {e.strerror}"
                                   f"{f'; {hint}' if hint else ''}") from None
    return folder
