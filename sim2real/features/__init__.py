"""Frozen-backbone features cached on disk (``cache``) and the seeded augmented views (``augment``)."""
