"""Sampling: portable latents, grids, and the Keras and ONNX Runtime samplers.

Importing this package (and ``latents``/``grid``) pulls in numpy only.
"""
