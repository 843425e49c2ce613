"""InceptionV3 pool features from a weights file the user supplies (nothing is downloaded).

``keras.applications.InceptionV3(weights=None, include_top=False, pooling="avg")``
is built under the current backend and ``load_weights(FILE)`` fills it: Keras'
own ``inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5`` or any
``.weights.h5`` saved from that architecture. Images are resized (bilinear) to
299x299 and scaled to [-1, 1] (``inception_v3.preprocess_input``); the features
are the 2,048 average-pooled activations. FID/KID on them are the published
recipe's up to the resize filter and the weights' provenance (the original FID
uses the TF1 graph's weights).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

INCEPTION_SIZE = 299
MIN_INCEPTION_SIZE = 75  # keras.applications.InceptionV3's smallest input


class InceptionWeightsError(ValueError):
    """A weights file that is missing or does not fit InceptionV3 without its top."""


def check_weights_file(weights: str | os.PathLike) -> Path:
    """The weights path, or a one-line error when it is missing or not a file."""
    path = Path(weights).expanduser()
    if not path.exists():
        raise InceptionWeightsError(f"InceptionV3 weights file {path} does not exist")
    if not path.is_file():
        raise InceptionWeightsError(f"InceptionV3 weights {path} is not a file")
    return path


class InceptionFeatures:
    """uint8 ``[n, S, S, 3]`` -> float64 ``[n, 2048]`` InceptionV3 pool features."""

    def __init__(self, weights: str | os.PathLike, image_size: int = INCEPTION_SIZE, batch_size: int = 32):
        path = check_weights_file(weights)
        if image_size < MIN_INCEPTION_SIZE:
            raise InceptionWeightsError(f"InceptionV3 needs inputs of at least {MIN_INCEPTION_SIZE} px")
        import keras

        self.image_size = int(image_size)
        self.batch_size = int(batch_size)
        self.model = keras.applications.InceptionV3(
            weights=None, include_top=False, pooling="avg", input_shape=(self.image_size, self.image_size, 3)
        )
        self.load_weights(path)

    def load_weights(self, weights: str | os.PathLike) -> None:
        """Fill the network from ``weights``; any layer left unfilled is an error."""
        path = check_weights_file(weights)
        # Keras warns (once per layer) instead of raising when parts of a file do not match;
        # any such warning means some layers kept random weights, which is an error here.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                self.model.load_weights(str(path))
                problem = next((str(w.message) for w in caught if issubclass(w.category, UserWarning)
                                and "load" in str(w.message).lower()), None)
            except Exception as e:  # noqa: BLE001 - h5py/keras raise many types for a wrong file
                problem = str(e).strip() or type(e).__name__
        if problem is not None:
            raise InceptionWeightsError(
                f"{path} does not hold InceptionV3 weights (include_top=False): {problem.splitlines()[0][:200]}"
            )

    def __call__(self, images: np.ndarray) -> np.ndarray:
        import keras
        from keras import ops

        images = np.asarray(images)
        out = []
        for i in range(0, len(images), self.batch_size):
            x = ops.convert_to_tensor(images[i : i + self.batch_size].astype(np.float32))
            x = ops.image.resize(x, (self.image_size, self.image_size), interpolation="bilinear")
            x = keras.applications.inception_v3.preprocess_input(x)  # [-1, 1]
            out.append(ops.convert_to_numpy(self.model(x, training=False)).astype(np.float64))
        return np.concatenate(out, axis=0) if out else np.zeros((0, 2048))
