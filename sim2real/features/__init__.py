"""Frozen-backbone features: cached on disk and keyed by everything they depend on (``cache``),
training batches assembled from them (``batching``) and the seeded augmented views (``augment``)."""
