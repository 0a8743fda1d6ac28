"""Run tracking: local metrics.jsonl always, Weights & Biases when enabled."""

from sim2real.tracking.logger import RunLogger

__all__ = ["RunLogger"]
