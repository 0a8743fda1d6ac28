"""Model outputs -> numpy predictions, still in MODEL-INPUT pixels.

``sim2real.data.dataset.predictions_to_original`` takes them on to original image pixels.
"""

from __future__ import annotations

import numpy as np
import torch


@torch.no_grad()
def decode_outputs(out: dict) -> dict[str, np.ndarray]:
    """Model outputs -> numpy predictions (model-input pixels): ``label (B,)``, ``score (B,)``,
    ``probs (B, C)``, and when the head has them ``center (B, 2)``, ``box (B, 4)`` xyxy,
    ``keypoints (B, K, 2)``, ``kp_score (B, K)``."""
    # Softmax in float32 torch (not numpy float64): the reported scores and metrics depend on it.
    probs = torch.softmax(out["logits"].float(), dim=1)
    score, label = probs.max(dim=1)
    res = {"label": label.cpu().numpy(), "score": score.cpu().numpy(), "probs": probs.cpu().numpy()}
    for k in ("center", "box", "keypoints", "kp_score"):
        if k in out:
            res[k] = out[k].float().cpu().numpy()
    return res
