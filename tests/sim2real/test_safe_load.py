"""Tensor files are read with weights_only=True, and a refusal is one line that never suggests
weights_only=False (which would execute the file)."""

from __future__ import annotations

import os

import pytest
import torch

from sim2real.engine.checkpoint import load_training_checkpoint
from sim2real.models import read_checkpoint
from sim2real.models.weights import read_state_dict


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # unpickling would create the marker file
        return (os.mkdir, (str(self.marker),))


@pytest.fixture()
def files(tmp_path):
    evil = tmp_path / "evil.pt"
    torch.save({"meta": "{}", "state": {}, "x": _Payload(tmp_path / "executed")}, evil)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all\n")
    return tmp_path, evil, junk


@pytest.mark.parametrize("reader", [read_checkpoint, load_training_checkpoint, read_state_dict])
def test_refusals_are_one_line_without_the_unsafe_hint(files, reader):
    root, evil, junk = files
    with pytest.raises(ValueError) as e:
        reader(evil)
    msg = str(e.value)
    assert str(evil) in msg and "Python objects" in msg
    assert "weights_only" not in msg and "\n" not in msg
    assert not (root / "executed").exists()
    with pytest.raises(ValueError) as e:
        reader(junk)
    assert "not a PyTorch tensor file" in str(e.value) and "weights_only" not in str(e.value)
