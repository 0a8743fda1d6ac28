"""``sim2real live`` settings (``configs/live.yaml``); every key can be overridden as ``key=value``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from sim2real.config import ConfigError, choice, rng
from sim2real.eval.pose import DEFAULT_MAX_REPROJ_PX
from sim2real.tracking import TrackingConfig


@dataclass
class RetryConfig:
    """Bounded exponential backoff for a live stream whose read() fails."""

    max_retries: int = field(default=5, metadata=rng(0, None))
    base_s: float = field(default=0.5, metadata=rng(0.0, None))
    factor: float = field(default=2.0, metadata=rng(1.0, None))
    max_s: float = field(default=8.0, metadata=rng(0.0, None))
    stream_timeout_s: float = field(default=10.0, metadata=rng(0.0, None))  # open/read timeout of URLs


@dataclass
class TtaConfig:
    """On-stream BatchNorm re-estimation (AdaBN-style); torch backend only."""

    enabled: bool = False
    momentum: float = field(default=0.01, metadata=rng(0.0, 1.0, lo_open=True))
    every: int = field(default=8, metadata=rng(1, None))     # update after this many frames
    buffer: int = field(default=8, metadata=rng(2, None))    # recent frames per update


@dataclass
class DriftConfig:
    """Feature drift of recent frames vs a reference real set (pooled embedding)."""

    reference: Optional[str] = None      # folder of images | dataset folder | COCO .json; None = off
    image_root: Optional[str] = None     # for a COCO .json whose file_name is relative elsewhere
    max_reference: int = field(default=64, metadata=rng(2, None))
    window: int = field(default=32, metadata=rng(2, None))
    every: int = field(default=8, metadata=rng(1, None))
    metric: str = field(default="mmd2", metadata=choice("mmd2", "mean_dist"))
    threshold: Optional[float] = None    # warn when the metric rises past it


@dataclass
class LiveConfig:
    checkpoint: str = ""                 # checkpoint .pt | exported .onnx | TorchScript file
    source: str = "0"                    # camera index | video file | rtsp/http URL | folder of frames
    backend: str = field(default="auto", metadata=choice("auto", "torch", "torchscript", "onnxruntime"))
    threads: int = field(default=0, metadata=rng(0, None))   # inference threads; 0 = pipeline_threads()
    # threads: capture+resize / inference / decoding+drawing overlap; serial: one after the other
    pipeline: str = field(default="threads", metadata=choice("threads", "serial"))
    # resize of each frame: None = fast (the training resize, linear instead of a slow non-integer area) | fast | area | linear | training
    frame_interpolation: Optional[str] = None
    display: bool = False
    output: Optional[str] = None         # annotated video (.mp4, mp4v; falls back to MJPG .avi)
    jsonl: Optional[str] = None          # one record per frame: every instance, original pixels
    run_dir: Optional[str] = None        # default runs/live/<UTC time>
    stats: Optional[str] = None          # default <run_dir>/stats.json
    max_frames: int = field(default=0, metadata=rng(0, None))  # 0 = until the source ends
    drop: str = field(default="auto", metadata=choice("auto", "latest", "all"))
    realtime: bool = False               # play files/folders at their frame rate (with drop=latest)
    folder_fps: float = field(default=30.0, metadata=rng(0.0, None, lo_open=True))
    output_fps: float = field(default=0.0, metadata=rng(0.0, None))  # 0 = the source's frame rate
    # report instances from this score; None = the model's head.score_thresh (checkpoint / export metadata)
    score_thresh: Optional[float] = None
    kp_threshold: float = field(default=0.5, metadata=rng(0.0, 1.0))
    # 6D pose of every reported instance (PnP on its corners against its class's 3D box)
    pose: bool = True
    camera_file: Optional[str] = None    # OpenCV/ROS calibration YAML; None = the model's training camera
    max_reproj_px: float = field(default=DEFAULT_MAX_REPROJ_PX, metadata=rng(0.0, None, lo_open=True))  # px
    overlay: bool = True                 # draw the FPS/latency line
    retry: RetryConfig = field(default_factory=RetryConfig)
    tta: TtaConfig = field(default_factory=TtaConfig)
    drift: DriftConfig = field(default_factory=DriftConfig)
    tracking: TrackingConfig = field(default_factory=lambda: TrackingConfig(mode="disabled"))
    seed: int = 0

    def validate(self) -> None:
        from sim2real.models.preprocess import FRAME_INTERPOLATIONS

        if self.frame_interpolation is not None and self.frame_interpolation not in FRAME_INTERPOLATIONS:
            raise ConfigError("frame_interpolation", f"null or one of {list(FRAME_INTERPOLATIONS)}",
                              self.frame_interpolation)
        if self.score_thresh is not None and not 0.0 <= self.score_thresh <= 1.0:
            raise ConfigError("score_thresh", "a score in [0, 1] or null (the model's)", self.score_thresh)
        if self.drift.threshold is not None and self.drift.threshold < 0:
            raise ConfigError("drift.threshold", "a value >= 0", self.drift.threshold)
