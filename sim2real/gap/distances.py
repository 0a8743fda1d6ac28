"""Distances between sim and real feature sets ``(N, D)``: how far apart the two domains look.

Pure functions on numpy (or torch) arrays, deterministic for a given ``seed``:

- :func:`mmd`: squared MMD with one RBF kernel, bandwidth by the median heuristic
  (Gretton et al., JMLR 2012).
- :func:`coral_distance`: ``||C_s - C_t||_F^2 / (4 d^2)`` (Sun & Saenko 2016).
- :func:`frechet_distance`: ``||mu_s - mu_t||^2 + Tr(C_s + C_t - 2 (C_s C_t)^(1/2))``, FID-style
  (Heusel et al., NeurIPS 2017).
- :func:`proxy_a_distance`: ``2 (1 - 2 eps)`` with ``eps`` the held-out error of a linear domain
  classifier (Ben-David et al., NeurIPS 2006 / Ganin et al. 2016).
- :func:`frechet_terms`: the Fréchet distance split into its mean offset and spread terms.
- :func:`feature_distances`: all of them at once, sharing one Gram matrix (the cheap per-epoch path).

With D = 1280 features and a few hundred samples per domain the ``D x D`` covariances are
rank-deficient and costly; MMD, CORAL and Fréchet are therefore computed from the ``(N+M) x (N+M)``
Gram matrix of the per-domain centred samples, which gives the same numbers exactly (see
:class:`_Gram`). float64 features are computed in float64, anything else in float32.

The Fréchet distance (like FID) is biased upwards for small N relative to D: compare values
computed with the same sample sizes only.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

METRICS = ("mmd", "coral", "frechet", "pad")


def as_features(x: Any, name: str = "features") -> np.ndarray:
    """``(N, D)`` float array from a numpy array / torch tensor / nested list, finite, N >= 1.

    float64 input stays float64; anything else (fp16 / fp32 features, ints) becomes float32,
    the precision features are computed in anyway.
    """
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    arr = arr.astype(np.float64 if arr.dtype == np.float64 else np.float32, copy=False)
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D feature array (N, D), got shape {arr.shape}")
    if len(arr) == 0:
        raise ValueError(f"{name}: feature array is empty")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name}: feature array contains NaN or inf")
    return arr


def subsample(x: np.ndarray, max_samples: int | None, seed: int = 0) -> np.ndarray:
    """At most ``max_samples`` rows, drawn without replacement (same seed -> same rows)."""
    if max_samples is None or len(x) <= max_samples:
        return x
    idx = np.sort(np.random.default_rng(seed).choice(len(x), size=max_samples, replace=False))
    return x[idx]


def _pair(x: Any, y: Any, min_rows: int = 2) -> tuple[np.ndarray, np.ndarray]:
    x, y = as_features(x, "sim features"), as_features(y, "real features")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"sim and real features must have the same width D, got {x.shape[1]} and {y.shape[1]}")
    if len(x) < min_rows or len(y) < min_rows:
        raise ValueError(f"need at least {min_rows} samples per domain, got {len(x)} sim and {len(y)} real")
    return x, y


class _Gram:
    """Statistics of two samples from one Gram matrix of the per-domain centred data.

    With ``A = X - mu_x`` (n x D), ``B = Y - mu_y`` (m x D), ``delta = mu_x - mu_y`` and the Gram
    blocks ``AA^T``, ``BB^T``, ``AB^T`` (one ``(n+m)^2 D`` matmul, in the features' precision;
    centring first keeps it accurate in float32):

    - squared distances: ``||x_i - y_j||^2 = |a_i|^2 + |b_j|^2 - 2 a_i.b_j + |delta|^2 + 2 a_i.delta
      - 2 b_j.delta`` (and the same without the delta terms within a domain);
    - ``||C_x||_F^2 = ||AA^T||_F^2 / (n-1)^2``, ``Tr(C_x C_y) = ||AB^T||_F^2 / ((n-1)(m-1))``;
    - ``Tr((C_x C_y)^(1/2))`` = sum of singular values of ``AB^T / sqrt((n-1)(m-1))``, because the
      non-zero eigenvalues of ``C_x C_y`` are those of ``(AB^T)(AB^T)^T`` scaled.

    Cost ``O((n+m)^2 D + min(n, m)^3)`` instead of ``O(D^3)`` for ``D x D`` matrix square roots.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray):
        self.n, self.m = len(x), len(y)
        mu_x, mu_y = x.mean(0, dtype=np.float64), y.mean(0, dtype=np.float64)
        a, b = x - mu_x.astype(x.dtype), y - mu_y.astype(y.dtype)
        z = np.concatenate([a, b])
        g = (z @ z.T).astype(np.float64)
        n = self.n
        self.aa, self.bb, self.ab = g[:n, :n], g[n:, n:], g[:n, n:]
        self.delta = mu_x - mu_y
        self.delta_sq = float(self.delta @ self.delta)
        self._proj = (z @ self.delta.astype(z.dtype)).astype(np.float64)  # a_i.delta, then b_j.delta
        self._g = g

    def sq_dists(self) -> np.ndarray:
        """``(n+m) x (n+m)`` squared distances of the joint sample ``[X; Y]``."""
        d = np.diag(self._g)
        sq = d[:, None] + d[None, :] - 2.0 * self._g
        n = self.n
        cross = self.delta_sq + 2.0 * self._proj[:n, None] - 2.0 * self._proj[None, n:]
        sq[:n, n:] += cross
        sq[n:, :n] += cross.T
        return np.maximum(sq, 0.0)


def _mmd_from_gram(gram: _Gram, bandwidth: float | None) -> tuple[float, float]:
    d2 = gram.sq_dists()
    if bandwidth is None:
        off = d2[np.triu_indices(len(d2), k=1)]  # distinct pairs (the matrix is symmetric)
        sigma2 = float(np.median(off)) if off.size else 0.0
        sigma2 = sigma2 if sigma2 > 1e-12 else 1.0
    else:
        sigma2 = float(bandwidth) ** 2
    k = np.exp(-d2 / (2.0 * sigma2))
    n = gram.n
    value = k[:n, :n].mean() + k[n:, n:].mean() - 2.0 * k[:n, n:].mean()
    return float(max(value, 0.0)), float(np.sqrt(sigma2))


def _coral_from_gram(gram: _Gram, d: int) -> float:
    nx, ny = gram.n - 1, gram.m - 1
    sq = (np.sum(gram.aa ** 2) / nx**2 + np.sum(gram.bb ** 2) / ny**2 - 2.0 * np.sum(gram.ab ** 2) / (nx * ny))
    return float(max(sq, 0.0) / (4.0 * d * d))


def _frechet_terms_from_gram(gram: _Gram) -> dict[str, float]:
    nx, ny = gram.n - 1, gram.m - 1
    tr_sqrt = np.linalg.svd(gram.ab, compute_uv=False).sum() / np.sqrt(nx * ny)
    return {"mean": float(gram.delta_sq), "spread_sim": float(np.trace(gram.aa) / nx),
            "spread_real": float(np.trace(gram.bb) / ny), "cross": float(-2.0 * tr_sqrt)}


def _frechet_from_gram(gram: _Gram) -> float:
    return float(max(sum(_frechet_terms_from_gram(gram).values()), 0.0))


def frechet_terms(x: Any, y: Any) -> dict[str, float]:
    """The Fréchet distance's four terms, which sum to :func:`frechet_distance` (``method="gram"``).

    ``mean`` = ``||mu_x - mu_y||^2`` (the domains' average content differs), ``spread_sim`` =
    ``Tr(C_x)`` and ``spread_real`` = ``Tr(C_y)`` (how varied each sample is), ``cross`` =
    ``-2 Tr((C_x C_y)^(1/2))`` (how far their variations line up). Why it matters: against footage
    of one static scene (small ``spread_real``), narrowing the sim randomization lowers
    ``spread_sim`` and with it the distance, without bringing the content any closer.

    >>> t = frechet_terms(np.random.default_rng(0).normal(size=(64, 8)), np.zeros((32, 8)) + 1.0)
    >>> sorted(t)
    ['cross', 'mean', 'spread_real', 'spread_sim']
    """
    x, y = _pair(x, y)
    return _frechet_terms_from_gram(_Gram(x, y))


def mmd(x: Any, y: Any, bandwidth: float | None = None) -> float:
    """Squared MMD (biased V-statistic, >= 0) with kernel ``exp(-||a-b||^2 / (2 sigma^2))``.

    ``sigma^2`` = median squared distance over distinct pairs of the joint sample unless
    ``bandwidth`` (sigma) is given. 0 for identical samples; ~1/N for two samples of one
    distribution; up to 2 for fully separated ones.
    """
    x, y = _pair(x, y, min_rows=1)
    return _mmd_from_gram(_Gram(x, y), bandwidth)[0]


def coral_distance(x: Any, y: Any) -> float:
    """``||C_s - C_t||_F^2 / (4 d^2)`` between the feature covariances (blind to mean offsets)."""
    x, y = _pair(x, y)
    return _coral_from_gram(_Gram(x, y), x.shape[1])


def _frechet_sqrtm(x: np.ndarray, y: np.ndarray, eps: float) -> float:
    import scipy.linalg

    mu_x, mu_y = x.mean(0), y.mean(0)
    cx, cy = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    cx, cy = np.atleast_2d(cx), np.atleast_2d(cy)
    covmean = scipy.linalg.sqrtm(cx @ cy)
    if not np.isfinite(covmean).all():
        # Singular product: nudge both covariances (as in the reference FID code).
        offset = np.eye(len(cx)) * eps
        covmean = scipy.linalg.sqrtm((cx + offset) @ (cy + offset))
    if np.iscomplexobj(covmean):
        # Tiny imaginary parts are round-off of a real PSD-similar matrix; large ones are not.
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3 * max(1.0, np.abs(covmean).max())):
            raise ValueError(f"frechet_distance: sqrtm gave a complex result (max imag "
                             f"{np.abs(covmean.imag).max():.3g}); use method='gram'")
        covmean = covmean.real
    diff = mu_x - mu_y
    value = diff @ diff + np.trace(cx) + np.trace(cy) - 2.0 * np.trace(covmean)
    return float(max(value, 0.0))


def frechet_distance(x: Any, y: Any, method: str = "auto", eps: float = 1e-6) -> float:
    """Fréchet distance between Gaussians fitted to both samples (FID formula on any features).

    ``method``: ``"sqrtm"`` = reference FID computation with ``scipy.linalg.sqrtm`` on ``D x D``
    covariances; ``"gram"`` = the exact same quantity from the sample Gram matrix (see
    :class:`_Gram`), stable and much cheaper when ``D`` exceeds the sample count; ``"auto"``
    picks ``gram`` when ``D >= min(N, M)``, else ``sqrtm``.
    """
    x, y = _pair(x, y)
    if method == "auto":
        method = "gram" if x.shape[1] >= min(len(x), len(y)) else "sqrtm"
    if method == "gram":
        return _frechet_from_gram(_Gram(x, y))
    if method == "sqrtm":
        return _frechet_sqrtm(x, y, eps)
    raise ValueError(f"frechet_distance: method must be 'auto', 'gram' or 'sqrtm', got {method!r}")


def proxy_a_distance(x: Any, y: Any, seed: int = 0, test_fraction: float = 0.5,
                     classifier: str = "logistic", C: float = 1.0) -> float:
    """Proxy A-distance ``2 (1 - 2 eps)`` in ``[0, 2]``: 0 = domains indistinguishable, 2 = separable.

    A linear classifier (``"logistic"``: LogisticRegression, ``"svm"``: LinearSVC) on standardised
    features learns sim vs real on one split; ``eps`` is its error on the held-out split. The larger
    domain is subsampled to the smaller one's size so that chance error is 0.5, and ``eps`` is
    capped at 0.5 (a classifier worse than chance says "indistinguishable", not "negative gap").
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    x, y = _pair(x, y, min_rows=4)
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"proxy_a_distance: test_fraction must be in (0, 1), got {test_fraction}")
    n = min(len(x), len(y))
    x, y = subsample(x, n, seed), subsample(y, n, seed + 1)
    feats = np.concatenate([x, y])
    labels = np.r_[np.ones(n), np.zeros(n)]
    f_train, f_test, l_train, l_test = train_test_split(feats, labels, test_size=test_fraction,
                                                        random_state=seed, stratify=labels)
    if classifier == "logistic":
        clf = LogisticRegression(C=C, max_iter=500)
    elif classifier == "svm":
        clf = LinearSVC(C=C, max_iter=5000, random_state=seed)
    else:
        raise ValueError(f"proxy_a_distance: classifier must be 'logistic' or 'svm', got {classifier!r}")
    model = make_pipeline(StandardScaler(), clf).fit(f_train, l_train)
    err = min(float(np.mean(model.predict(f_test) != l_test)), 0.5)
    return 2.0 * (1.0 - 2.0 * err)


def feature_distances(x: Any, y: Any, metrics: Iterable[str] = METRICS, max_samples: int | None = 256,
                      seed: int = 0, bandwidth: float | None = None) -> dict[str, float]:
    """Several distances at once (keys from :data:`METRICS`), sharing one Gram matrix.

    Each domain is first subsampled to ``max_samples`` rows (None = all) with ``seed``. Also
    returns ``mmd_sigma`` (the bandwidth used) when ``mmd`` is asked for.
    """
    metrics = list(metrics)
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"feature_distances: unknown metric(s) {unknown}; expected some of {list(METRICS)}")
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    if hasattr(y, "detach"):
        y = y.detach().cpu().numpy()
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim == 2 and y.ndim == 2:  # subsample first: converting rows we drop is wasted time
        x, y = subsample(x, max_samples, seed), subsample(y, max_samples, seed + 1)
    x, y = _pair(x, y, min_rows=4 if "pad" in metrics else 2)
    out: dict[str, float] = {}
    gram = _Gram(x, y) if set(metrics) & {"mmd", "coral", "frechet"} else None
    for name in metrics:
        if name == "mmd":
            out["mmd"], out["mmd_sigma"] = _mmd_from_gram(gram, bandwidth)
        elif name == "coral":
            out["coral"] = _coral_from_gram(gram, x.shape[1])
        elif name == "frechet":
            out["frechet"] = _frechet_from_gram(gram)
        elif name == "pad":
            out["pad"] = proxy_a_distance(x, y, seed=seed)
    return out
