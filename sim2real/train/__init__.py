"""Sim training, evaluation and prediction.

- ``config.TrainConfig``: the ``sim2real train`` config (``configs/train_sim.yaml``).
- ``trainer.train(cfg, resume=False)``: cached-feature training, checkpoints, DDP, compare_scratch.
- ``metrics``: accuracy, confusion, centre error, box IoU, PCK (pure numpy; reused by adapt/gap).
- ``inference``: ``load_model``, ``predict_arrays``, ``prediction_record``, ``evaluate_dataset``.
- ``sources``: cached-feature and image batch sources; ``toy_data``: a tiny shapes COCO dataset.
"""
