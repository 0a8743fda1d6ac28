"""Adapting a sim-trained checkpoint to the real camera: training loop, evaluation, baselines.

One :class:`AdaptSession` loads the checkpoint and every input once (:class:`AdaptData`), then
runs any number of:

- ``source_only()``: the sim-trained model as is, evaluated (sim val, real val, real test);
- ``real_only()``: ImageNet-pretrained backbone + fresh head fine-tuned on the labelled real
  frames alone, same schedule and budget (what the labels give without sim);
- ``adapt(methods)``: the objective of :mod:`sim2real.adapt.config` from the sim checkpoint.

Each run logs ``metrics.jsonl`` through :class:`~sim2real.tracking.RunLogger` and writes
``checkpoint.pt`` (last) and ``best.pt`` (selected epoch). Epoch 0 is the starting point (after
AdaBN when used), so model selection can also keep it: adaptation that never helps on the
selection split returns the starting model instead of a worse one.
"""

from __future__ import annotations

import copy
import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.nn.modules.batchnorm import _BatchNorm

from sim2real.adapt.alignment import adapt_bn, build_alignment
from sim2real.adapt.config import LOSS_METHODS, AdaptConfig, method_label
from sim2real.adapt.data import AdaptData
from sim2real.adapt.evaluation import epoch_record, evaluate_splits, final_record, trackable
from sim2real.adapt.features import AlignTap, FeatureBank, advance
from sim2real.adapt.l2sp import L2SP
from sim2real.adapt.result import (
    NegativeTransferWarning,
    RunResult,
    feature_values,
)
from sim2real.adapt.selection import (
    RULE_TEXT,
    negative_transfer_warnings,
    selection_basis,
    selection_score,
    selection_value,
)
from sim2real.adapt.unfreeze import UnfreezeSchedule
from sim2real.config import ConfigError, to_dict
from sim2real.engine import BestSelector, check_fresh_run_dir, open_run
from sim2real.engine.checkpoint import BEST, CHECKPOINT
from sim2real.eval.model import trained_tasks
from sim2real.features.batching import gather_batch
from sim2real.gap.run import write_gap_report
from sim2real.gap.tracker import FeatureGapTracker
from sim2real.io import atomic_write_json, check_writable
from sim2real.models import (
    PerceptionModel,
    build_backbone,
    load_checkpoint,
    read_checkpoint_meta,
    resolve_device,
    save_checkpoint,
    task_loss_weights,
)
from sim2real.runinfo import seed_everything
from sim2real.tracking import RunLogger, TrackingConfig, make_logger

log = logging.getLogger(__name__)

__all__ = ["AdaptSession", "NegativeTransferWarning", "RunResult"]

def _take(out: Any, sl: slice) -> Any:
    """Rows ``sl`` of every tensor in a (nested) model output dict."""
    if isinstance(out, dict):
        return {k: _take(v, sl) for k, v in out.items()}
    if isinstance(out, torch.Tensor) and out.dim() > 0:
        return out[sl]
    return out


def _check_fresh(run_dir: Path) -> Path:
    """Refuse to mix two runs' records in one metrics.jsonl."""
    return check_fresh_run_dir(run_dir, "metrics.jsonl", "choose another run_dir=... or delete the folder")


@dataclass
class _Fit:
    """One training run of :meth:`AdaptSession._fit` between its set-up, epochs and end."""

    name: str
    kind: str
    methods: list[str]
    run_dir: Path
    lr: float
    use_sim: bool
    rule: str                            # selection rule (sim2real.adapt.selection)
    rng: np.random.Generator             # every batch draw of _step, in a fixed order
    logger: RunLogger
    tracker: FeatureGapTracker
    tap: AlignTap
    warn_msgs: list[str] = field(default_factory=list)
    sched: UnfreezeSchedule | None = None
    cut: int = 0                         # features are cached after this many stages
    adabn: bool = False
    aligners: dict = field(default_factory=dict)
    stores: dict = field(default_factory=dict)
    l2sp: L2SP | None = None
    opt: torch.optim.Optimizer | None = None
    selector: BestSelector | None = None
    step: int = 0
    epochs_run: int = 0


def _bn_eval(model: torch.nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, _BatchNorm):
            m.eval()


class AdaptSession:
    """Checkpoint + data loaded once; ``source_only`` / ``real_only`` / ``adapt`` runs share caches."""

    def __init__(self, cfg: AdaptConfig, out_dir: str | Path | None = None, backbone=None,
                 bank: FeatureBank | None = None):
        if not cfg.checkpoint:
            raise ConfigError("checkpoint", "a sim-trained checkpoint (sim2real adapt --from <checkpoint.pt>)")
        self.cfg = cfg
        self.out = check_writable(out_dir or cfg.run_dir)
        self.device = resolve_device(cfg.device)
        self.meta = read_checkpoint_meta(cfg.checkpoint)
        self._pristine = backbone
        if self.meta["kind"] == "full":
            source = load_checkpoint(cfg.checkpoint)
        else:
            source = load_checkpoint(cfg.checkpoint, backbone=self.pristine_backbone())
        self.source = copy.deepcopy(source)  # never share modules with the pristine backbone
        # Adapt the tasks the checkpoint was trained for; the other heads' losses stay off.
        self.tasks = trained_tasks(self.meta)
        self.loss_weights = task_loss_weights(self.source.head_cfg, self.tasks)
        self.data = AdaptData(cfg, self.source.classes, self.source.num_keypoints, self.source.input_hw, self.out,
                              train_config=(self.meta.get("extra") or {}).get("train_config"),
                              symmetries={c: o["symmetry"] for c, o in self.source.objects.items() if o.get("symmetry")})
        self.source.input_hw = tuple(self.data.pipeline.input_hw)
        self.bank = bank or FeatureBank(cfg.cache_dir, self.device, cfg.progress)
        self.results: dict[str, RunResult] = {}

    def pristine_backbone(self):
        """The pretrained (ImageNet) backbone the checkpoint was trained from."""
        if self._pristine is None:
            self._pristine = build_backbone(self.meta["backbone"], self.meta["backbone_weights"])
        return self._pristine

    # --- features -------------------------------------------------------------------------------
    def _schedule(self, model: PerceptionModel) -> UnfreezeSchedule:
        c = self.cfg
        return UnfreezeSchedule(model.backbone.stage_names, c.unfreeze_epochs, c.unfreeze_stages, c.unfreeze_start)

    def _stores(self, model: PerceptionModel, cut: int, *, sim_train: bool, real_train: bool, unlabelled: bool) -> dict:
        c, d, pipe = self.cfg, self.data, self.data.pipeline
        clean = pipe.real_transform()
        s: dict[str, Any] = {"sim_val": self.bank.coco(d.sim_val, model, cut, pipe.sim_transform(),
                                                       "sim val features")}
        if sim_train:
            s["sim_train"] = [self.bank.coco(d.sim_train, model, cut, pipe.sim_transform(v, c.augment_strength, c.seed),
                                             f"sim features (view {v})") for v in range(c.sim_views)]
        for split in ("val", "test"):
            if split in d.real:
                s[f"real_{split}"] = self.bank.coco(d.real[split], model, cut, clean, f"real {split} features")
        if real_train and "train" in d.real:
            s["real_train"] = [self.bank.coco(d.real["train"], model, cut,
                                              pipe.real_transform(v, c.augment_strength, c.seed + 1),
                                              f"real k-shot features (view {v})") for v in range(c.real_views)]
        if unlabelled:
            s["unlabelled"] = self.bank.frames(d.unlabelled, model, cut, clean, d.unlabelled_source)
        return s

    # --- evaluation -----------------------------------------------------------------------------
    def _source_eval(self) -> dict:
        """The sim checkpoint, unchanged, on every split (once per session): the source-only
        baseline and the "before" t-SNE of every run's report."""
        if getattr(self, "_source_ev", None) is None:
            model = copy.deepcopy(self.source).to(self.device)
            sched = self._schedule(model)
            cut = sched.deepest_cut
            sched.apply(model, 0)
            stores = self._stores(model, cut, sim_train=False, real_train=False, unlabelled=True)
            tap = AlignTap(model, self.cfg.align_features)
            try:
                self._source_ev = evaluate_splits(model, stores, self.data, cut, tap, self.tasks, self.device, self.cfg.seed, test=True)
            finally:
                tap.close()
        return self._source_ev

    def _tracking(self, tracking: TrackingConfig | None) -> TrackingConfig:
        return tracking if tracking is not None else self.cfg.tracking

    # --- runs -----------------------------------------------------------------------------------
    def source_only(self, run_dir: str | Path | None = None, tracking: TrackingConfig | None = None) -> RunResult:
        """Evaluate the sim-trained model as is."""
        t0 = time.perf_counter()
        run_dir = _check_fresh(Path(run_dir or self.out / "baselines" / "source_only"))
        ev = self._source_eval()
        res = RunResult("source-only", "source_only", [], run_dir, real_test=ev.get("real_test"),
                        real_val=ev["real_val"], sim_val=ev["sim_val"], align_gap=ev["align_gap"],
                        checkpoint=Path(self.cfg.checkpoint), note="sim-trained checkpoint, no adaptation")
        self._write_baseline(res, run_dir, ev, self._tracking(tracking), t0)
        self.results["source_only"] = res
        return res

    def real_only(self, run_dir: str | Path | None = None, tracking: TrackingConfig | None = None) -> RunResult:
        """Pretrained backbone + fresh head trained on the labelled real frames only (same budget)."""
        run_dir = Path(run_dir or self.out / "baselines" / "real_only")
        if self.data.k == 0:
            res = RunResult("real-only fine-tune", "real_only", [], run_dir, note="not run: no labelled real frames (k=0)")
            self.results["real_only"] = res
            return res
        src = self.source
        seed_everything(self.cfg.seed)
        model = PerceptionModel(copy.deepcopy(self.pristine_backbone()), src.classes, src.head_cfg, src.input_hw,
                                src.resize)
        res = self._fit(model, run_dir, methods=[], kind="real_only", name="real-only fine-tune",
                        lr=self.cfg.real_only_lr, use_sim=False,
                        l2sp_include=lambda n: n.startswith("backbone."),  # a fresh head has no starting point
                        tracking=tracking)
        res.note = "ImageNet backbone + new head, labelled real frames only"
        self.results["real_only"] = res
        return res

    def adapt(self, methods: list[str], run_dir: str | Path | None = None, name: str | None = None,
              report: bool = True, tracking: TrackingConfig | None = None) -> RunResult:
        """``report`` is kept for callers; every run writes report.html."""
        model = copy.deepcopy(self.source)
        res = self._fit(model, Path(run_dir or self.out), methods=list(methods), kind="adapted",
                        name=name or method_label(methods), lr=self.cfg.lr, use_sim=True, l2sp_include=None,
                        tracking=tracking)
        self.results[res.name] = res
        return res

    def _write_baseline(self, res: RunResult, run_dir: Path, ev: dict, tracking: TrackingConfig, t0: float) -> None:
        logger = make_logger(run_dir, tracking, {"baseline": res.kind, **to_dict(self.cfg)})
        try:
            final = final_record(ev, FeatureGapTracker(self.cfg.gap))
            res.feature_gap = feature_values(final)
            res.wall_s = time.perf_counter() - t0
            rec = res.record()
            logger.log({"split": "test", **{k: v for k, v in rec.items() if not isinstance(v, str)}}, step=0)
            logger.summary({**rec, **final, "note": res.note, "real_metrics": self.data.real_frames["real_metrics"]})
            self._report(run_dir, res, ev, logger)
        finally:
            logger.close()
        atomic_write_json(run_dir / "result.json", self._result_doc(res), indent=2)

    # --- the loop -------------------------------------------------------------------------------
    def _fit(self, model: PerceptionModel, run_dir: Path, methods: list[str], kind: str, name: str, lr: float,
             use_sim: bool, l2sp_include: Callable[[str], bool] | None,
             tracking: TrackingConfig | None = None) -> RunResult:
        t0 = time.perf_counter()
        fit = self._open_fit(model, run_dir, methods, kind, name, lr, use_sim, tracking)
        try:
            self._set_up_fit(fit, model, l2sp_include)
            self._log_start(fit, model)
            for epoch in range(1, self.cfg.epochs + 1):
                if self._fit_epoch(fit, model, epoch):
                    log.info("%s: early stop at epoch %d (no improvement for %d epochs)", name, epoch,
                             self.cfg.patience)
                    break
            return self._end_fit(fit, model, t0)
        finally:
            fit.tap.close()
            fit.logger.close()

    def _open_fit(self, model: PerceptionModel, run_dir: Path, methods: list[str], kind: str, name: str, lr: float,
                  use_sim: bool, tracking: TrackingConfig | None) -> _Fit:
        """Fresh run folder, seeds, selection rule, run info + logger, alignment tap."""
        cfg, data = self.cfg, self.data
        run_dir = _check_fresh(run_dir)
        seed_everything(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        model.to(self.device)
        rule = cfg.selection_rule() if kind != "real_only" else "real_val"
        if rule == "real_val" and "val" not in data.real:
            raise ConfigError("n_val", "> 0: selection on the real validation split needs labelled val frames",
                              cfg.n_val)
        logger = open_run(run_dir, cfg, self._tracking(tracking), {"run": name, "kind": kind, **to_dict(cfg)},
                          seed=cfg.seed, run=name, kind=kind, methods=methods, data=data.describe(),
                          selection_rule=RULE_TEXT[rule])
        return _Fit(name, kind, methods, run_dir, lr, use_sim, rule, rng, logger, FeatureGapTracker(cfg.gap),
                    AlignTap(model, cfg.align_features))

    def _set_up_fit(self, fit: _Fit, model: PerceptionModel, l2sp_include: Callable[[str], bool] | None) -> None:
        """Unfreezing schedule, AdaBN, alignment losses, cached features, L2-SP, optimizer, selector."""
        cfg = self.cfg
        fit.sched = self._schedule(model)
        atomic_write_json(fit.run_dir / "unfreeze_schedule.json", fit.sched.describe(cfg.epochs), indent=1)
        fit.cut = fit.sched.deepest_cut
        fit.adabn = "adabn" in fit.methods
        if fit.adabn:
            stats = self._adabn(model)
            fit.logger.log({"epoch": 0, "adabn/bn_layers": stats.bn_layers, "adabn/samples": stats.samples,
                            "adabn/mean_shift": stats.mean_shift}, step=0)
        fit.sched.apply(model, 0)
        fit.aligners = {m: build_alignment(m, fit.tap.dim, **({"hidden": cfg.dann_hidden,
                                                               "max_iters": cfg.epochs * cfg.steps_per_epoch}
                                                              if m == "dann" else {})).to(self.device)
                        for m in fit.methods if m in LOSS_METHODS}
        need_unl = bool(fit.aligners) or fit.rule == "label_free" or fit.kind != "real_only"
        fit.stores = self._stores(model, fit.cut, sim_train=fit.use_sim, real_train=True, unlabelled=need_unl)
        fit.l2sp = L2SP(model, cfg.l2sp_weight, l2sp_include)
        groups = model.param_groups(fit.lr, cfg.backbone_lr_scale, cfg.layer_decay, cfg.weight_decay)
        for m, a in fit.aligners.items():
            params = [p for p in a.parameters() if p.requires_grad]
            if params:
                groups.append({"params": params, "lr": fit.lr, "weight_decay": 0.0, "name": f"align/{m}"})
        fit.opt = torch.optim.AdamW(groups)
        # Scores are tuples to minimise (sim2real.adapt.selection.selection_score).
        fit.selector = BestSelector("min", cfg.patience)

    def _log_start(self, fit: _Fit, model: PerceptionModel) -> None:
        """Epoch 0: the starting point (after AdaBN), a candidate for selection like every epoch."""
        ev0 = evaluate_splits(model, fit.stores, self.data, fit.cut, fit.tap, self.tasks, self.device, self.cfg.seed)
        rec = epoch_record(ev0, fit.tracker, 0)
        score = selection_score(fit.rule, ev0["real_val"], ev0["align_gap"].get("mmd"))
        fit.selector.update(0, score, model.state_dict())
        fit.logger.log({"epoch": 0, "split": "val", **rec, "trainable_stages": len(fit.sched.trainable_stages(0)),
                        **self._selection_fields(fit.rule, score)}, step=0)

    def _unfreeze(self, fit: _Fit, model: PerceptionModel, epoch: int) -> None:
        """Apply the schedule for ``epoch``; newly trainable stages join the optimizer."""
        cfg = self.cfg
        new = fit.sched.apply(model, epoch - 1)
        if new:
            have = {g["name"] for g in fit.opt.param_groups}
            for g in model.param_groups(fit.lr, cfg.backbone_lr_scale, cfg.layer_decay, cfg.weight_decay):
                if g["name"] not in have:
                    fit.opt.add_param_group(g)
            log.info("%s: epoch %d unfreezes %s", fit.name, epoch, new)

    def _fit_epoch(self, fit: _Fit, model: PerceptionModel, epoch: int) -> bool:
        """One epoch (``steps_per_epoch`` steps), its evaluation, selection and record; True = stop early."""
        cfg = self.cfg
        self._unfreeze(fit, model, epoch)
        model.train()
        if fit.adabn:
            _bn_eval(model)  # keep the real-data statistics AdaBN estimated
        sums: dict[str, float] = {}
        for _ in range(cfg.steps_per_epoch):
            parts = self._step(model, fit.stores, fit.cut, fit.tap, fit.aligners, fit.l2sp, fit.opt, fit.rng,
                               fit.use_sim)
            if parts.pop("align_without_grad", False) and not fit.warn_msgs:
                fit.warn_msgs.append(f"alignment ({cfg.align_features} features) reached no trainable parameter "
                                     f"in epoch {epoch}: use align_features=neck or unfreeze the last stage")
            fit.step += 1
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v
        fit.epochs_run = epoch
        ev = evaluate_splits(model, fit.stores, self.data, fit.cut, fit.tap, self.tasks, self.device, self.cfg.seed)
        score = selection_score(fit.rule, ev["real_val"], ev["align_gap"].get("mmd"))
        improved = fit.selector.update(epoch, score, model.state_dict())
        rec = {"epoch": epoch, "split": "val", **epoch_record(ev, fit.tracker, epoch),
               **{k: v / cfg.steps_per_epoch for k, v in sums.items()},
               "trainable_stages": len(fit.sched.trainable_stages(epoch - 1)),
               **self._selection_fields(fit.rule, score), "selection/improved": improved}
        for m, a in fit.aligners.items():
            rec.update({f"align/{m}/{k}": v for k, v in a.diagnostics().items()})
        fit.logger.log(rec, step=fit.step)
        return fit.selector.should_stop

    @staticmethod
    def _selection_fields(rule: str, score: tuple | None) -> dict:
        """``selection/score`` (the deciding metric's value) and ``selection/by`` (its name)."""
        return {"selection/score": selection_value(rule, score), "selection/by": selection_basis(rule, score)}

    @staticmethod
    def _selection_notes(fit: _Fit) -> list[str]:
        """Say when the best epoch was not chosen by the rule's own metric (or by nothing at all)."""
        sel = fit.selector
        if sel.best_epoch is None:
            return [(f"model selection: no epoch could be scored by the {fit.rule} rule (its metrics were "
                     f"undefined every epoch); kept the last epoch ({fit.epochs_run})")]
        basis = selection_basis(fit.rule, sel.best_score)
        if fit.rule == "real_val" and basis != "ap50":
            return [(f"model selection: real val AP50 was undefined (no labelled instance in the val frames); "
                     f"epoch {sel.best_epoch} was chosen by {basis} instead")]
        return []

    def _end_fit(self, fit: _Fit, model: PerceptionModel, t0: float) -> RunResult:
        """checkpoint.pt (last), best.pt (selected epoch), final evaluation with the test split,
        warnings, summary, result.json and the report."""
        sel = fit.selector
        extra = {"run": fit.name, "kind": fit.kind, "methods": fit.methods, "selection_rule": fit.rule}
        save_checkpoint(fit.run_dir / CHECKPOINT, model, extra={**extra, "epoch": fit.epochs_run})
        if sel.best_state is not None:
            model.load_state_dict(sel.best_state)
        best_epoch = sel.best_epoch if sel.best_epoch is not None else fit.epochs_run  # unscored: the last one
        best = save_checkpoint(fit.run_dir / BEST, model, extra={**extra, "epoch": best_epoch})
        final = evaluate_splits(model, fit.stores, self.data, fit.cut, fit.tap, self.tasks, self.device, self.cfg.seed,
                                test=True)
        fit.warn_msgs.extend(self._selection_notes(fit))
        res = RunResult(fit.name, fit.kind, fit.methods, fit.run_dir, fit.rule, best_epoch, fit.epochs_run,
                        real_test=final.get("real_test"), real_val=final["real_val"], sim_val=final["sim_val"],
                        align_gap=final["align_gap"], checkpoint=best,
                        selected_by=selection_basis(fit.rule, sel.best_score))
        final_rec = final_record(final, fit.tracker)
        res.feature_gap = feature_values(final_rec)
        transfer = self._transfer_warnings(res)
        res.warnings = fit.warn_msgs + transfer
        # stacklevel 4: the caller of adapt() / real_only() (they call _fit, which calls this).
        for w in fit.warn_msgs:
            warnings.warn(w, RuntimeWarning, stacklevel=4)
        for w in transfer:
            warnings.warn(w, NegativeTransferWarning, stacklevel=4)
        res.wall_s = time.perf_counter() - t0
        rec = res.record()
        fit.logger.log({"split": "test", "epoch": best_epoch,
                        **{k: v for k, v in rec.items() if not isinstance(v, str)}}, step=fit.step)
        fit.logger.summary({**rec, **final_rec, "selection_rule": RULE_TEXT[fit.rule], "warnings": res.warnings,
                            "real_metrics": self.data.real_frames["real_metrics"]})
        atomic_write_json(fit.run_dir / "result.json", self._result_doc(res), indent=2)
        self._report(fit.run_dir, res, final, fit.logger)
        return res

    def _step(self, model, stores, cut, tap, aligners, l2sp, opt, rng, use_sim) -> dict[str, float]:
        cfg, d = self.cfg, self.data
        chunks, spans, targets = [], {}, {}
        pos = 0

        def add(key: str, feats: dict, tgt: dict | None) -> None:
            nonlocal pos
            n = len(next(iter(feats.values())))
            chunks.append(feats)
            spans[key] = slice(pos, pos + n)
            if tgt is not None:
                targets[key] = tgt
            pos += n

        def draw(store_views: list, ds, bs: int) -> tuple[dict, dict]:
            valid = np.flatnonzero(store_views[0].valid)
            idx = valid if bs >= len(valid) else np.sort(rng.choice(valid, bs, replace=False))
            views = rng.integers(len(store_views), size=len(idx))
            feats, tgt, _ = gather_batch([store_views], np.zeros(len(idx), np.int64), idx, views,
                                         ds.original_targets(idx), model.input_hw)
            return feats, tgt

        if use_sim:
            add("sim", *draw(stores["sim_train"], d.sim_train, cfg.batch_size_sim))
        if "real_train" in stores:
            add("real", *draw(stores["real_train"], d.real["train"], cfg.batch_size_real))
        if aligners:
            unl = stores["unlabelled"]
            n = len(unl)
            idx = np.sort(rng.choice(n, min(cfg.batch_size_unlabelled, n), replace=False))
            add("unlabelled", unl.batch(idx), None)
        feats = {k: torch.cat([c[k] for c in chunks]).to(self.device) for k in chunks[0]}
        out = model.forward_from_cut(advance(model, feats, cut))
        total = torch.zeros((), device=self.device)
        parts: dict[str, float] = {}
        for key, weight in (("sim", cfg.sim_weight), ("real", cfg.real_weight)):
            if key in targets:
                tgt = {k: v.to(self.device) for k, v in targets[key].items()}
                loss, _ = model.compute_loss(_take(out, spans[key]), tgt, self.loss_weights)
                total = total + weight * loss
                parts[f"loss/{key}"] = float(loss.detach())
        if aligners:
            f = tap(out)
            real_rows = torch.cat([f[spans[k]] for k in ("real", "unlabelled") if k in spans])
            align = sum(a(f[spans["sim"]], real_rows) for a in aligners.values())
            total = total + cfg.align_weight * align
            parts["loss/align"] = float(align.detach())
            parts["align_without_grad"] = not f.requires_grad
        if l2sp.weight > 0:
            pen = l2sp.penalty()
            total = total + pen.to(self.device)
            parts["loss/l2sp"] = float(pen.detach())
        opt.zero_grad(set_to_none=True)
        total.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], cfg.grad_clip)
        opt.step()
        parts["loss/total"] = float(total.detach())
        return parts

    def _adabn(self, model: PerceptionModel):
        """Re-estimate every BatchNorm's statistics on the real frames (unlabelled + k-shot)."""
        pre = model.make_preprocess()
        clean = self.data.pipeline.real_transform()
        imgs = self.data.real_images_for_stats()
        xs = torch.stack([pre(clean(im, i))[0] for i, im in enumerate(imgs)])
        bs = max(2, self.cfg.batch_size_unlabelled)
        batches = [xs[s:s + bs].to(self.device) for s in range(0, len(xs), bs)]
        return adapt_bn(model, batches)

    # --- reporting ------------------------------------------------------------------------------
    def _result_doc(self, res: RunResult) -> dict:
        """result.json: the result plus which real frames it was scored on (``real_frames.json``)."""
        rf = self.data.real_frames
        return {**res.to_dict(), "real_metrics": rf["real_metrics"],
                "real_frames": {"labels": rf["labels"], "unlabelled_source": rf["unlabelled"]["source"],
                                "unlabelled_count": rf["unlabelled"]["count"],
                                **{split: part["frames"] for split, part in rf["labelled"].items()}}}

    def _transfer_warnings(self, res: RunResult) -> list[str]:
        if res.kind != "adapted":
            return []
        base = {}
        for key, label in (("source_only", "source-only"), ("real_only", "real-only fine-tune")):
            r = self.results.get(key)
            if r is not None and r.real_test:
                base[label] = r.real_test
        return negative_transfer_warnings(res.real_test, base, name=f"adapted ({res.name})")

    def _report_notes(self) -> dict[str, list[str]]:
        notes = {"Real frames used": self.data.real_frames_lines()}
        fixes = [a["change"] for a in self.data.pipeline.applied_fixes]
        if fixes:
            notes["Input pipeline: domain-check fixes applied"] = fixes
        return notes

    def _report(self, run_dir: Path, res: RunResult, ev: dict, logger) -> None:
        """report.html (+ W&B media): frames with predictions, confusion, error histograms and the
        t-SNE of sim vs real ``embed`` features before (the source checkpoint) and after (this run)."""
        domains = [ev.get("dom_sim"), ev.get("dom_real_test") or ev.get("dom_real_val")]
        before, after = self._source_eval(), ev
        feats = {}
        if res.kind == "source_only":
            if trackable(ev):
                feats["source checkpoint"] = (ev["f_sim"], ev["f_real"])
        else:
            for label, e in (("before (source checkpoint)", before), (f"after ({res.name})", after)):
                if trackable(e):
                    feats[label] = (e["f_sim"], e["f_real"])
        try:
            write_gap_report(run_dir, [d for d in domains if d is not None], classes=self.source.classes,
                             features=feats or None, method=res.name, title=f"sim2real adapt: {res.name}",
                             logger=logger, seed=self.cfg.seed, notes=self._report_notes())
        except Exception as e:  # noqa: BLE001 - a plotting failure must not lose a finished run
            warnings.warn(f"report.html could not be written ({type(e).__name__}: {e})", RuntimeWarning, stacklevel=2)
