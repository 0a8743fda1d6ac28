"""sim2real.io: atomic writes never turn a special output target into a regular file."""

from __future__ import annotations

import os
import stat

import pytest

from sim2real.io import OutputError, atomic_write_text


def test_atomic_write_replaces_a_regular_file(tmp_path):
    p = tmp_path / "out.json"
    p.write_text("old")
    atomic_write_text(p, "new")
    assert p.read_text() == "new" and not [q for q in tmp_path.iterdir() if q.name.startswith(".")]


@pytest.mark.parametrize("kind", ["symlink", "fifo", "folder", "device"])
def test_special_targets_are_refused_and_left_untouched(tmp_path, kind):
    target = tmp_path / "target.txt"
    target.write_text("keep me")
    out = tmp_path / "out"
    if kind == "symlink":
        out.symlink_to(target)
    elif kind == "fifo":
        os.mkfifo(out)
    elif kind == "folder":
        out.mkdir()
    else:  # a character device node of our own (never a system one: a broken writer would replace it)
        try:
            os.mknod(out, stat.S_IFCHR | 0o600, os.makedev(1, 3))
        except PermissionError:
            pytest.skip("creating a device node needs root (CAP_MKNOD)")
    before = os.lstat(out)
    with pytest.raises(OutputError) as e:
        atomic_write_text(out, "data")
    assert str(out) in str(e.value) and "not a regular file" in str(e.value)
    after = os.lstat(out)
    assert (after.st_mode, after.st_ino) == (before.st_mode, before.st_ino)
    assert target.read_text() == "keep me"
    assert not [q for q in tmp_path.iterdir() if q.name.startswith(".")]
