"""Feature-gap distances: ~0 for one distribution, clearly larger for shifted ones, deterministic."""

import numpy as np
import pytest
import torch

from sim2real.gap import (FeatureGapTracker, GapTrackingConfig, coral_distance, feature_distances,
                          frechet_distance, mmd, proxy_a_distance)
from sim2real.gap.distances import frechet_terms

D = 24


def _sample(seed: int, n: int = 200, shift: float = 0.0, mix: np.ndarray | None = None) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, D))
    if mix is not None:
        x = x @ mix
    return x + shift


MIX = np.diag(np.linspace(0.3, 2.5, D))  # a covariance change ("different lighting / texture")


@pytest.mark.parametrize("fn", [mmd, coral_distance, frechet_distance, proxy_a_distance])
def test_near_zero_for_one_distribution_larger_for_shifted(fn):
    a, b = _sample(1), _sample(2)
    shifted = _sample(3, shift=0.8, mix=MIX)
    same = fn(a, b)
    far = fn(a, shifted)
    assert far > 0
    assert same >= 0
    assert far > 5 * same + 1e-9, (same, far)
    if fn is not proxy_a_distance:  # a classifier cannot even be trained on identical samples
        assert fn(a, a) == pytest.approx(0.0, abs=1e-9)


def test_proxy_a_distance_range_and_separable_case():
    a = _sample(1)
    assert proxy_a_distance(a, _sample(2)) < 0.5
    assert proxy_a_distance(a, _sample(3, shift=5.0)) == pytest.approx(2.0)
    assert proxy_a_distance(a, _sample(3, shift=5.0), classifier="svm") == pytest.approx(2.0)


def test_frechet_gram_path_matches_scipy_sqrtm():
    a, b = _sample(1, n=300), _sample(2, n=150, shift=0.3, mix=MIX)
    assert frechet_distance(a, b, method="gram") == pytest.approx(frechet_distance(a, b, method="sqrtm"), rel=1e-7)
    # Reference value from the textbook formula with explicit covariances.
    import scipy.linalg
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    ref = (np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(ca) + np.trace(cb)
           - 2 * np.trace(scipy.linalg.sqrtm(ca @ cb).real))
    assert frechet_distance(a, b) == pytest.approx(ref, rel=1e-6)


def test_frechet_terms_sum_to_the_distance_and_separate_mean_from_spread():
    a, b = _sample(1, n=300), _sample(2, n=150, shift=0.3, mix=MIX)
    t = frechet_terms(a, b)
    assert sum(t.values()) == pytest.approx(frechet_distance(a, b), rel=1e-9)
    assert t["mean"] == pytest.approx(np.sum((a.mean(0) - b.mean(0)) ** 2), rel=1e-9)
    assert t["spread_sim"] == pytest.approx(np.trace(np.cov(a, rowvar=False)), rel=1e-9)
    # A pure shift moves only the mean term; a narrower sim sample moves only its spread.
    shifted = frechet_terms(a + 1.0, b)
    assert shifted["mean"] > t["mean"] + 1 and shifted["spread_sim"] == pytest.approx(t["spread_sim"], rel=1e-9)
    narrow = frechet_terms(a.mean(0) + 0.5 * (a - a.mean(0)), b)
    assert narrow["mean"] == pytest.approx(t["mean"], rel=1e-9)
    assert narrow["spread_sim"] == pytest.approx(0.25 * t["spread_sim"], rel=1e-9)


def test_coral_matches_explicit_covariances_and_handles_d_greater_than_n():
    a, b = _sample(1, n=40), _sample(2, n=30, mix=MIX)
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    assert coral_distance(a, b) == pytest.approx(np.sum((ca - cb) ** 2) / (4 * D * D), rel=1e-9)
    wide_a = np.random.default_rng(0).standard_normal((16, 300))
    wide_b = np.random.default_rng(1).standard_normal((16, 300)) * 2
    assert np.isfinite(frechet_distance(wide_a, wide_b)) and np.isfinite(coral_distance(wide_a, wide_b))


def test_feature_distances_matches_single_functions_and_is_deterministic():
    a, b = _sample(1, n=300), _sample(2, n=280, shift=0.4)
    torch_a = torch.from_numpy(a).float()  # torch input accepted too
    d1 = feature_distances(torch_a, b, max_samples=128, seed=7)
    d2 = feature_distances(torch_a, b, max_samples=128, seed=7)
    assert d1 == d2
    assert set(d1) == {"mmd", "mmd_sigma", "coral", "frechet", "pad"}
    full = feature_distances(a, b, max_samples=None, metrics=["mmd", "coral", "frechet"])
    assert full["mmd"] == pytest.approx(mmd(a, b), rel=1e-9)
    assert full["coral"] == pytest.approx(coral_distance(a, b), rel=1e-9)
    assert full["frechet"] == pytest.approx(frechet_distance(a, b, method="sqrtm"), rel=1e-6)


def test_tracker_schedule_and_names():
    tracker = FeatureGapTracker(GapTrackingConfig(max_samples=64, pad_every=3))
    a, b = _sample(1, n=100), _sample(2, n=100, shift=1.0)
    e0 = tracker(a, b, epoch=0)
    assert set(e0) == {"gap/feat_mmd", "gap/feat_mmd_sigma", "gap/feat_coral", "gap/feat_frechet", "gap/feat_pad"}
    assert "gap/feat_pad" not in tracker(a, b, epoch=1)
    assert "gap/feat_pad" in tracker(a, b, epoch=3)
    assert "gap/feat_pad" in tracker(a, b, epoch=4, final=True)
    assert tracker.last_seconds > 0
    assert FeatureGapTracker(GapTrackingConfig(every=2))(a, b, epoch=1) == {}


def test_bad_inputs_name_the_problem():
    with pytest.raises(ValueError, match="same width"):
        mmd(np.zeros((4, 3)), np.zeros((4, 5)))
    with pytest.raises(ValueError, match="2-D"):
        coral_distance(np.zeros(4), np.zeros((4, 4)))
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(np.full((4, 2), np.nan), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="at least 4 samples"):
        proxy_a_distance(np.zeros((3, 2)), np.zeros((8, 2)))
    with pytest.raises(ValueError, match="unknown metric"):
        feature_distances(np.zeros((8, 2)), np.zeros((8, 2)), metrics=["fid"])
    from sim2real.config import ConfigError, load_config
    with pytest.raises(ConfigError, match="metrics"):
        load_config(GapTrackingConfig, None, ["metrics=[fid]"])


def test_float32_features_match_float64_even_with_a_large_common_offset():
    # Pooled ReLU features: all positive, mean well above the spread (cancellation-prone).
    a = np.abs(_sample(1, n=120)) + 20.0
    b = np.abs(_sample(2, n=100, mix=MIX)) + 20.3
    exact = feature_distances(a, b, metrics=["mmd", "coral", "frechet"], max_samples=None)
    approx = feature_distances(a.astype(np.float16).astype(np.float32), b.astype(np.float16).astype(np.float32),
                               metrics=["mmd", "coral", "frechet"], max_samples=None)
    fp16_a, fp16_b = a.astype(np.float16).astype(np.float64), b.astype(np.float16).astype(np.float64)
    ref16 = feature_distances(fp16_a, fp16_b, metrics=["mmd", "coral", "frechet"], max_samples=None)
    for k in ("mmd", "coral", "frechet"):
        assert approx[k] == pytest.approx(ref16[k], rel=1e-4), k  # float32 maths on fp16 data
        assert approx[k] == pytest.approx(exact[k], rel=0.05), k  # fp16 storage itself costs little
