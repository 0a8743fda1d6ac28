"""Deployment: the live OpenCV loop, ONNX/TorchScript export, CPU backends, on-stream adaptation.

Quick tour::

    from sim2real.deploy import load_backend, run_live, LiveConfig, export_onnx

    backend = load_backend("model.onnx", threads=2)      # or a checkpoint .pt (torch eager)
    x, meta = backend.prepare(frame_bgr, color="bgr")     # uint8 HxWxC: one cv2 resize (Preprocess.frame)
    out = backend(x[None])                                # normalised in the model; dense maps (heatmap, offset, ltrb, kp_reg,
                                                          # kp_heatmap, kp_offset) + embed, numpy
    records = to_records(out, [meta], backend.classes, backend.score_thresh, **backend.decode_options)
    # -> [{"instances": [{"class", "class_id", "score", "box", "center", "keypoints"}, ...]}],
    #    ORIGINAL pixels, the predict-JSONL instance records

    export_onnx(model, "model.onnx", batch=1)             # metadata_props carry classes/preprocess
    stats = run_live(LiveConfig(checkpoint="model.onnx", source="clip.mp4", output="out.mp4"))

Modules: ``sources`` (parse/open a source), ``capture`` (capture thread, latest-frame or every
frame, reconnect backoff), ``backends`` (torch / torchscript / onnxruntime behind one call),
``export`` and ``quantize`` (ONNX/TorchScript, map and decoded-instance parity, int8),
``predictions`` (the one numpy decoding of every backend's maps, records via
:func:`sim2real.eval.records.prediction_record`),
``overlay`` (drawing), ``video_writer`` (always-finalized video), ``latency`` (p50/p95/p99),
``tta`` (BatchNorm re-estimation), ``drift`` (MMD / mean-embedding drift monitor),
``image_sets`` (reference/calibration images), ``accuracy`` (a backend scored on a labelled set,
the int8 guard), ``batch_predict`` (offline batches for ``sim2real predict``), ``loop`` (``run_live``), ``config``.
"""

from sim2real.deploy.backends import (BackendError, InferenceBackend, OnnxRuntimeBackend, TorchBackend,
                                      TorchScriptBackend, load_backend)
from sim2real.deploy.config import LiveConfig
from sim2real.deploy.predictions import to_records


def __getattr__(name):
    # export/loop pull in torch.onnx / the capture stack: import them only when used.
    if name in ("export_onnx", "export_torchscript", "export_checkpoint"):
        from sim2real.deploy import export

        return getattr(export, name)
    if name == "run_live":
        from sim2real.deploy.loop import run_live

        return run_live
    raise AttributeError(f"module 'sim2real.deploy' has no attribute {name!r}")


__all__ = ["BackendError", "InferenceBackend", "LiveConfig", "OnnxRuntimeBackend", "TorchBackend",
           "TorchScriptBackend", "export_checkpoint", "export_onnx", "export_torchscript", "load_backend",
           "run_live", "to_records"]
