"""Offline image-quality metrics: SWD (ProGAN), FID/KID and precision/recall/density/coverage.

``nebula_keras3.metrics.evaluate.evaluate_images`` is the entry point; this package
imports numpy and Pillow only (Keras only for InceptionV3 and ``--model``).
"""
