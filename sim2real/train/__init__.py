"""Sim training.

- ``config.TrainConfig``: the ``sim2real train`` config (``configs/train_sim.yaml``).
- ``trainer.train(cfg, resume=False)``: cached-feature training, checkpoints, DDP, compare_scratch.
- ``evaluation``: the feature stores and the validation pass; ``real_val``: sim-vs-real tracking
  during training and report.html; ``result``: ``TrainResult``, report.md, compare_scratch.md.
- ``sources``: cached-feature and image batch sources; ``toy_data``: a tiny shapes COCO dataset.

Scoring a model (metrics, the evaluation loop, ``load_model``, ``predict_arrays``,
``evaluate_dataset``) lives in :mod:`sim2real.eval`.
"""
