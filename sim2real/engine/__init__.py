"""Run plumbing both training loops share (sim training and adaptation).

- :func:`check_fresh_run_dir`: refuse to write a new run into a folder that holds one;
- :func:`open_run`: ``config.yaml`` + ``run_info.json``, then the run's metrics logger;
- :func:`truncate_metrics`: drop the records of epochs a resumed run will redo;
- :mod:`sim2real.engine.checkpoint`: resumable training checkpoints (weights + optimizer + RNG);
- :class:`BestSelector` / :func:`is_better`: best-epoch tracking with a mode and patience.

The loops themselves stay explicit in :mod:`sim2real.train.trainer` and
:mod:`sim2real.adapt.trainer`; only these pieces are common.
"""

from sim2real.engine.run_folder import check_fresh_run_dir, open_run, truncate_metrics
from sim2real.engine.selection import BestSelector, is_better

__all__ = ["BestSelector", "check_fresh_run_dir", "is_better", "open_run", "truncate_metrics"]
