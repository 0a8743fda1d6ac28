"""Geometry of rigid objects seen by a pinhole camera (numpy + OpenCV; imports nothing of sim2real).

- :mod:`sim2real.geometry.symmetry`: an object's symmetries as rotations of its 3D box and the matching
  corner permutations; canonical labels, symmetric rotation / corner errors.
- :mod:`sim2real.geometry.pose`: 6D pose from predicted corners with PnP; ADD / ADD-S.
- :mod:`sim2real.geometry.camera`: camera files (OpenCV / ROS YAML) and intrinsics resampling.
"""
