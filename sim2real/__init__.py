"""sim2real: train perception in a PyBullet simulator, adapt it to a real camera, deploy it."""

__version__ = "0.1.0"
