"""Adapting a sim-trained model to the real camera.

``sim2real.adapt.alignment`` holds the feature-alignment losses (CORAL, MMD, DANN) and AdaBN.
Kept import-light on purpose: importing ``sim2real.adapt`` loads nothing heavy.
"""
