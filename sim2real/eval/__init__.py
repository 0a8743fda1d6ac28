"""Run a model on a dataset and score it: the one evaluation core under train, adapt, gap and deploy.

- ``metrics``: perception metrics (numpy), their names (``METRIC_NAMES``, ``CONTRACT_METRICS``),
  ``BOOKKEEPING`` keys, ``pred_keys(tasks)``, ``task_metrics``;
- ``model``: ``load_model`` (checkpoint -> model in eval mode on its device), ``trained_tasks``;
- ``loop``: ``EvalBatch``, ``forward_batches`` / ``run_batches`` (forward -> decode -> ORIGINAL
  pixels, embeddings, summed losses) and ``score``;
- ``domain``: ``DomainEval`` (one model on one labelled set), ``subset_rows``;
- ``dataset``: ``evaluate_dataset``, ``evaluate_domain`` over a CocoDataset;
- ``predict``: ``predict_arrays`` (streamed predictions for images);
- ``records``: ``prediction_record``, the predict-JSONL record (numpy only, used by deploy too).

``metrics``, ``records`` and ``domain`` do not import torch; the other names load it on first use, so a
deployment that needs only the record builder stays light.
"""

from __future__ import annotations

from sim2real.eval.metrics import (ALL_TASKS, BOOKKEEPING, CONTRACT_METRICS, METRIC_NAMES, perception_metrics,
                                   pred_keys, task_metrics)
from sim2real.eval.records import prediction_record

_LAZY = {"load_model": "model", "trained_tasks": "model", "EvalBatch": "loop", "ModelPass": "loop",
         "forward_batches": "loop", "run_batches": "loop", "score": "loop", "DomainEval": "domain",
         "evaluate_dataset": "dataset", "evaluate_domain": "dataset", "subset_rows": "domain",
         "predict_arrays": "predict"}

__all__ = ["ALL_TASKS", "BOOKKEEPING", "CONTRACT_METRICS", "METRIC_NAMES", "perception_metrics", "pred_keys",
           "prediction_record", "task_metrics", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"sim2real.eval.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'sim2real.eval' has no attribute {name!r}")
