"""RunLogger + W&B sink: offline run files hold the gap metrics; W&B trouble never stops a run."""

import sys
import warnings

import numpy as np
import pytest
from PIL import Image

from sim2real.gap import sim_real_record
from sim2real.io import read_jsonl
from sim2real.tracking import (RunLogger, TrackingConfig, WandbSink, find_offline_runs, make_logger,
                               read_offline_run)
from sim2real.tracking.wandb_sink import wandb_record


def _wb_warnings(caught):
    return [w for w in caught if issubclass(w.category, RuntimeWarning) and "W&B" in str(w.message)]


def test_offline_run_history_contains_gap_metrics(tmp_path):
    run_dir = tmp_path / "runs" / "adapt" / "tiny"
    cfg = {"method": "coral", "lr": 0.01, "data": {"real": "visp_cube"}}
    img = tmp_path / "frame.png"
    Image.fromarray(np.full((24, 32, 3), 128, np.uint8)).save(img)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with make_logger(run_dir, TrackingConfig(tags=["test"]), cfg) as logger:
            for epoch in range(3):
                sim = {"acc": 0.9, "center_err_px_median": 2.0 + epoch, "pck@0.05": 0.8}
                real = {"acc": 0.5 + 0.1 * epoch, "center_err_px_median": 10.0 - epoch, "pck@0.05": 0.5}
                logger.log({"epoch": epoch, "split": "train", "loss/cls": 1.0 / (epoch + 1)}, step=epoch * 10)
                logger.log({"epoch": epoch, **sim_real_record(sim, real)}, step=epoch * 10)
            logger.log_media("report/frames", img, kind="image", step=20)
            logger.summary({"gap/acc": 0.2, "method": "coral"})
    assert not _wb_warnings(caught)

    local = read_jsonl(run_dir / "metrics.jsonl")
    assert len(local) == 6 and local[1]["gap/acc"] == pytest.approx(0.4)

    files = find_offline_runs(run_dir)
    assert len(files) == 1 and files[0].parent.name.startswith("offline-run-")
    run = read_offline_run(files[0])
    assert run.config["method"] == "coral" and run.config["data"] == {"real": "visp_cube"}
    gap_rows = [row for row in run.history if "gap/acc" in row]
    assert [row["step"] for row in gap_rows] == [0, 10, 20]
    assert [row["gap/acc"] for row in gap_rows] == pytest.approx([0.4, 0.3, 0.2])
    assert [row["gap/center_err_px_median"] for row in gap_rows] == pytest.approx([8.0, 6.0, 4.0])
    assert [row["gap/pck@0.05"] for row in gap_rows] == pytest.approx([0.3] * 3)
    assert all("sim/acc" in row and "real/acc" in row for row in gap_rows)
    assert any("train/loss/cls" in row for row in run.history)  # split became a prefix
    # wandb's reader flattens the image record into dotted keys.
    media = [row for row in run.history if row.get("report/frames._type") == "image-file"]
    assert len(media) == 1 and media[0]["step"] == 20
    assert (files[0].parent / "files" / media[0]["report/frames.path"]).is_file()
    assert run.summary["gap/acc"] == pytest.approx(0.2)


def test_wandb_init_failure_warns_once_and_local_logging_goes_on(tmp_path, monkeypatch):
    import wandb

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(wandb, "init", boom)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        logger = make_logger(tmp_path / "run", TrackingConfig(mode="online"), {"a": 1})
        for i in range(3):
            logger.log({"gap/acc": 0.1 * i}, step=i)
        logger.summary({"gap/acc": 0.2})
        logger.close()
    wb = _wb_warnings(caught)
    assert len([w for w in wb if "failed" in str(w.message)]) == 1, [str(w.message) for w in wb]
    assert "No space left" in str(wb[-1].message)
    assert logger.sinks == []
    assert [r["gap/acc"] for r in read_jsonl(tmp_path / "run" / "metrics.jsonl")] == pytest.approx([0, 0.1, 0.2])


def test_online_failure_falls_back_to_offline(tmp_path, monkeypatch):
    import wandb

    real_init = wandb.init

    def online_fails(*a, **k):
        if k.get("mode") == "online":
            raise RuntimeError("api_key not configured (no-tty)")
        return real_init(*a, **k)

    monkeypatch.setattr(wandb, "init", online_fails)
    with pytest.warns(RuntimeWarning, match="logging offline instead") as caught:
        logger = make_logger(tmp_path, TrackingConfig(mode="online"), {"a": 1})
    assert len(_wb_warnings(caught)) == 1
    logger.log({"gap/acc": 0.5}, step=0)
    logger.close()
    run = read_offline_run(find_offline_runs(tmp_path)[0])
    assert [row["gap/acc"] for row in run.history] == [0.5]


def test_wandb_mode_env_disables(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    logger = make_logger(tmp_path, TrackingConfig(mode="offline"), {})
    assert logger.sinks == []


def test_wandb_not_installed_warns_once(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ImportError
    with pytest.warns(RuntimeWarning, match="W&B start failed") as caught:
        logger = make_logger(tmp_path / "run", None, {})
    assert len(_wb_warnings(caught)) == 1
    logger.log({"acc": 1.0}, step=0)
    assert read_jsonl(tmp_path / "run" / "metrics.jsonl")[0]["acc"] == 1.0


def test_exception_while_logging_disables_sink_after_one_warning(tmp_path):
    sink = WandbSink(TrackingConfig(), tmp_path / "run", {})
    assert sink.active

    def broken(*a, **k):
        raise RuntimeError("disk error")

    sink.run.log = broken
    logger = RunLogger(tmp_path / "run", sinks=[sink])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in range(4):
            logger.log({"gap/acc": float(i)}, step=i)
        logger.summary({"x": 1})
        logger.close()
    assert len(_wb_warnings(caught)) == 1 and "disk error" in str(_wb_warnings(caught)[0].message)
    assert not sink.active
    assert len(read_jsonl(tmp_path / "run" / "metrics.jsonl")) == 4


def test_any_raising_sink_is_dropped_by_runlogger(tmp_path):
    class Broken:
        def log(self, *a, **k):
            raise ValueError("nope")

    logger = RunLogger(tmp_path, sinks=[Broken()])
    with pytest.warns(RuntimeWarning, match="sink dropped"):
        logger.log({"a": 1})
    logger.log({"a": 2})
    assert logger.sinks == [] and len(read_jsonl(tmp_path / "metrics.jsonl")) == 2


def test_disabled_mode_attaches_nothing(tmp_path):
    logger = make_logger(tmp_path, {"mode": "disabled"}, {})
    logger.log({"a": 1}, step=0)
    assert logger.sinks == [] and not (tmp_path / "wandb").exists()
    with pytest.raises(ValueError, match="unknown key"):
        make_logger(tmp_path, {"modes": "offline"})


def test_wandb_record_naming():
    rec = {"step": 3, "epoch": 1, "split": "val", "acc": 0.5, "val/iou": 0.2, "gap/acc": 0.1,
           "time": 1.0, "note": "x", "nan": None}
    assert wandb_record(rec) == {"step": 3, "epoch": 1, "val/acc": 0.5, "val/iou": 0.2, "gap/acc": 0.1}


# --------------------------------------------------------------------------- local report


def _tiny_run(run_dir, logger=None):
    from sim2real.gap.report import write_report

    own = logger is None
    logger = logger or RunLogger(run_dir)
    for epoch in range(3):
        logger.log({"epoch": epoch, "split": "train", "loss/total": 1.0 / (epoch + 1)}, step=epoch)
        logger.log({"epoch": epoch, **sim_real_record({"acc": 0.9, "center_err_px_median": 2.0},
                                                      {"acc": 0.5 + 0.1 * epoch, "center_err_px_median": 9.0})},
                   step=epoch)
    logger.summary({"sim/acc": 0.9, "real/acc": 0.7, "gap/acc": 0.2, "sim/center_err_px_median": 2.0,
                    "real/center_err_px_median": 9.0, "gap/center_err_px_median": 7.0})
    rng = np.random.default_rng(0)
    sim_f = rng.standard_normal((40, 16))
    real_before, real_after = rng.standard_normal((35, 16)) + 2.0, rng.standard_normal((35, 16)) + 0.3
    sim_img = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    real_path = run_dir / "real_frame.png"
    Image.fromarray(rng.integers(0, 255, (48, 64), dtype=np.uint8)).save(real_path)  # gray, from a file
    pred = {"class": "cube", "score": 0.8, "box": [10, 8, 40, 30], "center": [25, 19],
            "keypoints": [[12, 10, 0.9], [38, 10, 0.7]]}
    label = {"bbox": [12, 9, 26, 20], "center_px": [24, 18], "keypoints": [12, 10, 2, 38, 10, 1], "class_name": "cube"}
    report = write_report(
        run_dir, method="coral",
        features={"before": (sim_f, real_before), "after": (sim_f, real_after)},
        confusion={"sim": [[5, 1], [0, 6]], "real": [[3, 3], [2, 4]]}, classes=["cube", "cylinder"],
        loc_errors={"sim": {"center_err_px": rng.gamma(2, 1, 50)}, "real": {"center_err_px": rng.gamma(2, 4, 50)}},
        frames={"sim": [(sim_img, pred, label)] * 2, "real": [(real_path, pred, None)]},
        logger=logger)
    if own:
        logger.close()
    return report


def test_report_html_pngs_and_gap_table(tmp_path):
    report = _tiny_run(tmp_path)
    text = report.html_path.read_text()
    assert report.html_path == tmp_path / "report.html"
    assert set(report.images) == {"metric_curves", "feature_embedding", "confusion", "localization_errors", "frames"}
    for name, path in report.images.items():
        assert path.parent == tmp_path / "report"
        with Image.open(path) as im:
            im.verify()
        with Image.open(path) as im:
            assert im.format == "PNG" and im.width > 200 and im.height > 150, name
        assert path.stat().st_size > 5000
    assert text.count("data:image/png;base64,") == 5
    rows = {r["metric"]: r for r in report.rows}
    assert rows["acc"]["gap"] == pytest.approx(0.2) and rows["center_err_px_median"]["gap"] == pytest.approx(7.0)
    for cell in ("<td>acc</td><td>0.9</td><td>0.7</td><td>0.2</td>",
                 "<td>center_err_px_median</td><td>2</td><td>9</td><td>7</td>"):
        assert cell in text
    assert rows["feature mmd (before)"]["gap"] > 3 * rows["feature mmd (after)"]["gap"] > 0
    assert "method: <b>coral</b>" in text

    again = _tiny_run(tmp_path / "again")  # same inputs -> same bytes
    for name, path in report.images.items():
        assert again.images[name].read_bytes() == path.read_bytes(), name


def test_report_media_reach_wandb(tmp_path):
    from sim2real.gap.report import write_report

    with make_logger(tmp_path, TrackingConfig(), {}) as logger:
        logger.log({"epoch": 0, "sim/acc": 0.9, "real/acc": 0.5, "gap/acc": 0.4}, step=0)
        write_report(tmp_path, confusion={"real": [[3, 1], [0, 4]]},
                     frames={"real": [(np.zeros((24, 32), np.uint8), {"center": [16, 12]}, None)]}, logger=logger)
    run = read_offline_run(find_offline_runs(tmp_path)[0])
    logged = {k.split(".")[0] for row in run.history for k in row if k.endswith("._type")}
    assert logged == {"report/metric_curves", "report/confusion", "report/frames", "report/html"}


def test_report_bad_inputs(tmp_path):
    from sim2real.gap.report import write_report

    with pytest.raises(FileNotFoundError, match="run folder"):
        write_report(tmp_path / "missing")
    with pytest.raises(ValueError, match="square"):
        write_report(tmp_path, confusion={"sim": [[1, 2, 3]]})
    with pytest.raises(FileNotFoundError, match="nope.png"):
        write_report(tmp_path, frames={"real": [(tmp_path / "nope.png", None, None)]})
    # An empty run folder still gives a (short) report.
    assert write_report(tmp_path).html_path.is_file()
