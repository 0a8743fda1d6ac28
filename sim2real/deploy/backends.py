"""CPU inference behind one call: ``backend(batch uint8 (B, H, W, C)) -> {name: np.ndarray}``.

The input is the frame as ``backend.prepare(img, color)`` makes it (``Preprocess.frame``: one cv2
resize + letterbox, uint8 RGB, NHWC, what cv2 already holds); scaling to float and mean/std
(``InputNormalize``) run inside the model: in the exported ONNX/TorchScript graph, and in front of
the eager model for the torch backend, so every backend does the same arithmetic.  ONNX files
exported before this (``sim2real.version`` < 3, float32 NCHW input) are refused with a one-line
message saying to re-export.

- ``TorchBackend``: the checkpoint's ``PerceptionModel`` in eager mode under ``torch.inference_mode``
  (or a TorchScript file written by ``sim2real export --format torchscript``).
- ``OnnxRuntimeBackend``: an exported ``.onnx`` on ``CPUExecutionProvider`` with full graph
  optimisation; classes and preprocessing come from the file's ``metadata_props``, so the ONNX
  file is all a deployment needs.

Every backend carries ``classes`` and the model's ``preprocess`` (a ``Preprocess``) so the live
loop prepares frames exactly as training did, plus how its maps decode: ``decode_options``
(``stride``, ``max_instances``, ``kp_score_thresh``) and the model's ``score_thresh``, and what the
6D pose of an instance needs: ``objects`` (per class ``{"size_m", "symmetry"}``) and the training
``camera`` (``{"K", "dist", "width", "height"}`` or None), from the checkpoint or the export metadata.  Outputs are
the head's dense maps as numpy (``OUTPUT_NAMES`` = ``sim2real.models.perception.EXPORT_OUTPUTS``:
``heatmap, offset, ltrb, kp_reg, kp_heatmap, kp_offset`` in cell units, docs/contracts.md
"Instances") and the pooled ``embed``, then ``depth`` for a head built with it; every backend's maps go through the one numpy decoder,
:func:`sim2real.deploy.predictions.decode_outputs` (``sim2real.eval.instances.decode_maps``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from sim2real.eval.instances import MAP_KEYS

#: Output tensors, in the order the exported graphs list them: the head's maps + ``embed``
#: (= ``sim2real.models.perception.EXPORT_OUTPUTS``; spelled out here so the ONNX path needs no torch).
OUTPUT_NAMES = (*MAP_KEYS, "embed")
#: Decoding settings an exported file records (ONNX metadata_props / the TorchScript meta file).
DECODE_KEYS = ("stride", "max_instances", "score_thresh", "kp_score_thresh")
INPUT_NAME = "input"
META_PREFIX = "sim2real."
ONNX_FORMAT = "sim2real-onnx"
#: metadata ``version`` 3: uint8 NHWC input, normalisation in the graph (2: float32 NCHW input).
EXPORT_VERSION = 3
INPUT_LAYOUT = "uint8 NHWC RGB"
TS_META_FILE = "sim2real_meta.json"


class BackendError(ValueError):
    """A model file cannot serve as this backend (names the file and what is missing)."""


class InferenceBackend:
    """Base class: subclasses set the attributes below and implement ``__call__``."""

    name = "base"
    classes: list[str]
    preprocess: Any            # sim2real.models.Preprocess
    input_hw: tuple[int, int]
    source: str = ""
    meta: dict
    decode_options: dict       # decode_maps keywords: stride, max_instances, kp_score_thresh
    score_thresh: float        # the model's reporting threshold (head.score_thresh)
    objects: dict = {}         # per class {"size_m": [sx, sy, sz] | None, "symmetry": {...}} (6D pose)
    camera: dict | None = None  # the training images' camera {"K", "dist", "width", "height"}

    def __call__(self, batch: np.ndarray) -> dict[str, np.ndarray]:  # pragma: no cover - interface
        raise NotImplementedError

    def prepare(self, img: np.ndarray, color: str = "rgb"):
        """One image -> ``(uint8 (H, W, C) model input, PreprocessMeta)`` (``Preprocess.frame``)."""
        return self.preprocess.frame(img, color)

    @property
    def channels(self) -> int:
        return int(self.preprocess.channels)

    def info(self) -> dict:
        return {"backend": self.name, "model": self.source, "classes": list(self.classes),
                "input_hw": list(self.input_hw), **self.decode_options, "score_thresh": self.score_thresh}

    def _set_decoding(self, meta: dict, path) -> None:
        """``decode_options`` / ``score_thresh`` from an exported file's metadata."""
        missing = [k for k in ("outputs", *DECODE_KEYS) if k not in meta]
        if missing or list(meta["outputs"])[:len(MAP_KEYS)] != list(MAP_KEYS):
            raise BackendError(f"{path}: exported before multi-object detection (outputs "
                               f"{meta.get('outputs')}, metadata lacks {missing or 'the dense maps'}); "
                               "re-export the checkpoint with 'sim2real export'")
        self.decode_options = {"stride": int(meta["stride"]), "max_instances": int(meta["max_instances"]),
                               "kp_score_thresh": float(meta["kp_score_thresh"])}
        self.score_thresh = float(meta["score_thresh"])
        self.objects = dict(meta.get("objects") or {})
        self.camera = meta.get("camera") or None


def _check_batch(batch: np.ndarray, input_hw: tuple[int, int], channels: int) -> np.ndarray:
    batch = np.asarray(batch)
    if batch.dtype != np.uint8 or batch.ndim != 4 or tuple(batch.shape[1:]) != (*input_hw, channels):
        raise ValueError(f"backend input must be uint8 (B, {input_hw[0]}, {input_hw[1]}, {channels}) frames "
                         f"(backend.prepare), got {batch.dtype} {batch.shape}")
    return np.ascontiguousarray(batch)


def set_torch_threads(threads: int) -> None:
    import torch

    if threads and threads > 0:
        torch.set_num_threads(int(threads))


class TorchBackend(InferenceBackend):
    """Eager PyTorch; ``model`` is a ``PerceptionModel`` (``load_checkpoint``)."""

    name = "torch"

    def __init__(self, model, threads: int = 0, source: str = "", device=None):
        from sim2real.models import Preprocess
        from sim2real.models.perception import export_outputs

        set_torch_threads(threads)
        self.model = model.eval()
        self.device = device if device is not None else next(model.parameters()).device
        self.classes = list(model.classes)
        self.preprocess = Preprocess.from_dict(model.preprocess_cfg)
        self.normalize = self.preprocess.normalizer().to(self.device)
        self.input_hw = tuple(model.input_hw)
        self.source = source
        self.threads = threads
        self.decode_options = dict(model.decode_options())
        self.score_thresh = float(model.head_cfg.score_thresh)
        self.objects = dict(getattr(model, "objects", None) or {})
        self.camera = getattr(model, "camera", None) or None
        self.meta = {"classes": self.classes, "preprocess": model.preprocess_cfg, "input_hw": list(self.input_hw),
                     "outputs": list(export_outputs(model)), **self.decode_options, "score_thresh": self.score_thresh,
                     "objects": self.objects, "camera": self.camera, "num_keypoints": int(model.num_keypoints)}

    @classmethod
    def from_checkpoint(cls, path: str | Path, threads: int = 0) -> "TorchBackend":
        from sim2real.models import load_checkpoint

        return cls(load_checkpoint(path), threads=threads, source=str(path))

    def forward_tensor(self, x):
        """uint8 ``(B, H, W, C)`` tensor -> the model's outputs (torch), normalised in front of it
        (also what on-stream BatchNorm adaptation runs)."""
        return self.model(self.normalize(x.to(self.device)))

    def __call__(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        import torch

        x = torch.from_numpy(_check_batch(batch, self.input_hw, self.channels))
        with torch.inference_mode():
            out = self.forward_tensor(x)
        return {k: out[k].float().cpu().numpy() for k in self.meta["outputs"] if k in out}


class TorchScriptBackend(InferenceBackend):
    """A TorchScript file from ``sim2real export --format torchscript`` (metadata in an extra file)."""

    name = "torchscript"

    def __init__(self, path: str | Path, threads: int = 0):
        import torch

        from sim2real.models import Preprocess

        set_torch_threads(threads)
        import warnings

        extra = {TS_META_FILE: ""}
        try:
            with warnings.catch_warnings():  # torch.jit is deprecated but still the portable format
                warnings.simplefilter("ignore", FutureWarning)
                self.module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra).eval()
        except (RuntimeError, ValueError) as e:
            raise BackendError(f"{path}: not a TorchScript file ({str(e).splitlines()[0]})") from None
        if not extra[TS_META_FILE]:
            raise BackendError(f"{path}: TorchScript file without {TS_META_FILE}; export it with "
                               "'sim2real export --format torchscript'")
        self.meta = json.loads(extra[TS_META_FILE])
        _check_version(self.meta, path)
        self._set_decoding(self.meta, path)
        self.outputs = list(self.meta["outputs"])
        self.classes = list(self.meta["classes"])
        self.preprocess = Preprocess.from_dict(self.meta["preprocess"])
        self.input_hw = tuple(self.meta["input_hw"])
        self.source = str(path)

    def __call__(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        import torch

        with torch.inference_mode():
            out = self.module(torch.from_numpy(_check_batch(batch, self.input_hw, self.channels)))
        return {k: v.numpy() for k, v in zip(self.outputs, out)}


# The sim2real.* metadata_props format is written and read here, next to its constants, so export
# and quantize (which both write it) need not import each other.
def set_onnx_metadata(onnx_model, meta: dict) -> None:
    """Store ``meta`` as ``sim2real.<key>`` entries (strings as is, the rest as JSON)."""
    keep = [p for p in onnx_model.metadata_props if not p.key.startswith(META_PREFIX)]
    del onnx_model.metadata_props[:]
    onnx_model.metadata_props.extend(keep)
    for k, v in meta.items():
        entry = onnx_model.metadata_props.add()
        entry.key, entry.value = META_PREFIX + k, v if isinstance(v, str) else json.dumps(v)


def read_onnx_metadata(props: dict[str, str], path: str | Path) -> dict:
    """``metadata_props`` of an exported model -> ``{classes, preprocess, input_hw, outputs, stride,
    max_instances, score_thresh, kp_score_thresh, objects, camera, ...}`` (every ``sim2real.*`` entry, JSON-decoded)."""
    meta = {k[len(META_PREFIX):]: v for k, v in props.items() if k.startswith(META_PREFIX)}
    if meta.get("format") != ONNX_FORMAT:
        raise BackendError(f"{path}: no sim2real metadata in the ONNX file (metadata_props "
                           f"'{META_PREFIX}format' missing); export it with 'sim2real export --format onnx'")
    out = {}
    for key, value in meta.items():
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    for key in ("classes", "preprocess", "input_hw", "outputs"):
        if key not in out:
            raise BackendError(f"{path}: ONNX metadata_props lacks '{META_PREFIX}{key}'")
    return out


def _check_version(meta: dict, path) -> None:
    if int(meta.get("version", 0)) < EXPORT_VERSION:
        raise BackendError(f"{path}: exported with float32 input (sim2real export format version "
                           f"{meta.get('version')}); this version takes uint8 frames with the normalisation "
                           "in the graph: re-export the checkpoint with 'sim2real export'")


class OnnxRuntimeBackend(InferenceBackend):
    """ONNX Runtime on CPU. ``threads``: intra-op threads (0 = ORT's default, all cores);
    ``spin``: let idle intra-op threads busy-wait (ORT's default; off leaves the cores to the
    live loop's other stages between inferences)."""

    name = "onnxruntime"

    def __init__(self, path: str | Path, threads: int = 0, optimization: str = "all", spin: bool = True):
        import onnxruntime as ort

        from sim2real.models import Preprocess

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"ONNX model {path} does not exist")
        so = ort.SessionOptions()
        if threads and threads > 0:
            so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
        if not spin:
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        level = ort.GraphOptimizationLevel
        so.graph_optimization_level = {"none": level.ORT_DISABLE_ALL, "basic": level.ORT_ENABLE_BASIC,
                                       "extended": level.ORT_ENABLE_EXTENDED, "all": level.ORT_ENABLE_ALL}[optimization]
        try:
            self.session = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
        except Exception as e:  # ORT raises its own exception types (InvalidProtobuf, Fail, ...)
            raise BackendError(f"{path}: onnxruntime cannot load it ({str(e).splitlines()[0]})") from None
        self.meta = read_onnx_metadata(self.session.get_modelmeta().custom_metadata_map, path)
        _check_version(self.meta, path)
        if self.session.get_inputs()[0].type != "tensor(uint8)":
            raise BackendError(f"{path}: input '{self.session.get_inputs()[0].name}' is "
                               f"{self.session.get_inputs()[0].type}, expected tensor(uint8) frames; "
                               "re-export the checkpoint with 'sim2real export'")
        self._set_decoding(self.meta, path)
        self.classes = list(self.meta["classes"])
        self.preprocess = Preprocess.from_dict(self.meta["preprocess"])
        self.input_hw = tuple(self.meta["input_hw"])
        self.outputs = [o.name for o in self.session.get_outputs()]
        shape0 = self.session.get_inputs()[0].shape[0]
        self.fixed_batch = shape0 if isinstance(shape0, int) else None
        self.source = str(path)
        self.threads = threads
        self.spin = spin

    def _run(self, batch: np.ndarray) -> list[np.ndarray]:
        return self.session.run(self.outputs, {INPUT_NAME: batch})

    def __call__(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        batch = _check_batch(batch, self.input_hw, self.channels)
        n = self.fixed_batch
        if n is None or len(batch) == n:
            res = self._run(batch)
        else:  # a fixed-batch graph: run in chunks of its batch size, padding the last one
            parts = []
            for i in range(0, len(batch), n):
                chunk = batch[i:i + n]
                pad = n - len(chunk)
                if pad:
                    chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)])
                parts.append([r[:n - pad] for r in self._run(chunk)])
            res = [np.concatenate([p[j] for p in parts]) for j in range(len(self.outputs))]
        return dict(zip(self.outputs, res))

    def info(self) -> dict:
        d = super().info()
        d.update(fixed_batch=self.fixed_batch, quantization=self.meta.get("quantization", "none"),
                 threads=self.threads, spin=self.spin)
        return d


def guess_backend(path: str | Path) -> str:
    return "onnxruntime" if str(path).lower().endswith(".onnx") else "torch"


def load_backend(path: str | Path, backend: str = "auto", threads: int = 0, spin: bool = True) -> InferenceBackend:
    """The right backend for a model file: ``.onnx`` -> onnxruntime; a checkpoint -> torch;
    a TorchScript file (``.ts``/``.torchscript`` or a zip without a checkpoint) -> torchscript."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} does not exist (expected a sim2real checkpoint .pt, "
                                f"an exported .onnx or a TorchScript file)")
    kind = guess_backend(path) if backend == "auto" else backend
    if kind == "onnxruntime":
        if path.suffix.lower() != ".onnx":
            raise BackendError(f"--backend onnxruntime needs an exported .onnx file, got {path}; run "
                               f"'sim2real export --checkpoint {path} --format onnx' first")
        return OnnxRuntimeBackend(path, threads=threads, spin=spin)
    if kind in ("torch", "torchscript"):
        if path.suffix.lower() == ".onnx":
            raise BackendError(f"{path} is an ONNX file: use --backend onnxruntime")
        if kind == "torchscript" or path.suffix.lower() in (".ts", ".torchscript"):
            return TorchScriptBackend(path, threads=threads)
        return TorchBackend.from_checkpoint(path, threads=threads)
    raise BackendError(f"unknown backend {backend!r}: expected auto, torch, torchscript or onnxruntime")


def default_threads() -> int:
    """Threads to use by default: what OMP_NUM_THREADS says, else every core."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    return int(env) if env.isdigit() and int(env) > 0 else (os.cpu_count() or 1)


def pipeline_threads(cores: int | None = None) -> int:
    """Inference threads of the overlapped live loop (``threads: 0``): the cores left once the
    other stages (capture/decode + resize, instance decoding + drawing + writing: ~1-3 ms per
    frame together) have theirs.  Up to 3 cores those stages take a fraction of one core, and
    taking a core from a model that needs 7+ ms would cost more than it frees: every core.
    From 4 cores on, one core is left to them.  The loop loads the model with ``spin=False``:
    measured at 224x304 (EfficientNet-Lite0 + dense head, 2 cores), inference costs ~10 ms of CPU
    per frame with 1 or 2 non-spinning threads, but 19.6 ms with 2 spinning ones: the spin is CPU
    the capture and drawing threads need."""
    n = cores or default_threads()
    return n if n <= 3 else n - 1
