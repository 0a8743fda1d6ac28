"""Sim training.

- ``config.TrainConfig``: the ``sim2real train`` config (``configs/train_sim.yaml``).
- ``trainer.train(cfg, resume=False)``: cached-feature training, checkpoints, DDP, compare_scratch.
- ``sources``: cached-feature and image batch sources; ``toy_data``: a tiny shapes COCO dataset.

Scoring a model (metrics, the evaluation loop, ``load_model``, ``predict_arrays``,
``evaluate_dataset``) lives in :mod:`sim2real.eval`.
"""
