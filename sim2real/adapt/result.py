"""One row of an adaptation comparison: :class:`RunResult` (real/sim metrics in original pixels,
the selected epoch, feature gaps, warnings) and how it is flattened for records and tables."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sim2real.adapt.selection import RULE_TEXT
from sim2real.eval.metrics import METRIC_NAMES
from sim2real.gap.naming import sim_real_record

METRIC_KEYS = METRIC_NAMES + ("n", "recall@thr")   # the scalars a RunResult keeps per split (recall: selection)


class NegativeTransferWarning(UserWarning):
    """Adaptation made real metrics worse than a baseline (source-only or real-only)."""


def scalars(metrics: dict | None) -> dict | None:
    if metrics is None:
        return None
    return {k: metrics[k] for k in METRIC_KEYS if k in metrics}


@dataclass
class RunResult:
    """One row of the comparison: real/sim metrics in original pixels, selection, wall time."""

    name: str
    kind: str                      # source_only | real_only | adapted
    methods: list[str]
    run_dir: Path | None
    selection: str | None = None   # rule name (see sim2real.adapt.selection)
    best_epoch: int | None = None
    epochs_run: int = 0
    real_test: dict | None = None
    real_val: dict | None = None
    sim_val: dict | None = None
    feature_gap: dict = field(default_factory=dict)   # embed features, final tracker values (gap/feat_*)
    align_gap: dict = field(default_factory=dict)     # alignment-tap features vs unlabelled (align/feat_*)
    wall_s: float = 0.0
    warnings: list[str] = field(default_factory=list)
    checkpoint: Path | None = None
    note: str = ""
    selected_by: str | None = None  # the metric that decided the best epoch (selection.selection_basis)

    def record(self) -> dict:
        """Flat ``sim/``, ``real/`` (test) and ``gap/`` record plus bookkeeping."""
        rec: dict[str, Any] = {"method": self.name, "kind": self.kind, "selection": self.selection,
                               "selected_by": self.selected_by, "best_epoch": self.best_epoch, "epochs_run": self.epochs_run,
                               "wall_s": round(self.wall_s, 2)}
        rec.update(sim_real_record(self.sim_val or {}, self.real_test or {}))
        for k, v in (self.real_val or {}).items():
            if k != "n":
                rec[f"real_val/{k}"] = v
        rec.update({f"gap/feat_{k}": v for k, v in self.feature_gap.items()
                    if not k.endswith(("_sigma", "_n_sim", "_n_real"))})
        rec.update({f"align/feat_{k}": v for k, v in self.align_gap.items() if not k.endswith("_sigma")})
        return rec

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "methods": self.methods,
                "run_dir": str(self.run_dir) if self.run_dir else None, "selection": self.selection,
                "selection_rule": RULE_TEXT.get(self.selection or "", None), "selected_by": self.selected_by,
                "best_epoch": self.best_epoch,
                "epochs_run": self.epochs_run, "real_test": self.real_test, "real_val": self.real_val,
                "sim_val": self.sim_val, "feature_gap": self.feature_gap, "align_gap": self.align_gap,
                "wall_s": self.wall_s,
                "warnings": self.warnings, "checkpoint": str(self.checkpoint) if self.checkpoint else None,
                "note": self.note}


def feature_values(record: dict) -> dict:
    """``gap/feat_<d>`` of a gap record as ``{<d>: value}`` (RunResult.feature_gap)."""
    prefix = "gap/feat_"
    return {k[len(prefix):]: v for k, v in record.items() if k.startswith(prefix)}
