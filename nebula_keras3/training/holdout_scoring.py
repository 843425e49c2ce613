"""Score the generator against held-out images during training (``--eval-every K``).

``HoldoutEvaluation`` is a Keras callback: every K epochs it renders as many images
as are held out (image seeds 0..n-1, the ``nebula sample`` recipe), scores them with
``metrics.evaluate.evaluate_images`` and, given the training images, measures how many
are copies of training photos (``nn_copy_rate``, ``metrics.memorisation``: the held-out
photos set the scale). It puts the figures (``EVAL_COLUMNS``) into the epoch's logs,
where ``TrainingMonitor`` writes them to ``epochs.csv`` and the loss plot. When SWD improves it writes ``checkpoints/best.npz`` (same format and atomic
write as ``last.npz``). It draws no random number the training uses, so resuming
stays exact.
"""

from __future__ import annotations

import math
import time

import keras
import numpy as np

from nebula_keras3.metrics.evaluate import evaluate_images
from nebula_keras3.metrics.features import RandomCNNFeatures
from nebula_keras3.metrics.memorisation import TrainingNeighbours
from nebula_keras3.training.checkpoint import BEST_FILE, save_checkpoint

# Columns added to epochs.csv; the first one picks checkpoints/best.npz (lower is better).
EVAL_COLUMNS = ("swd", "fid_randcnn", "kid_randcnn", "nn_copy_rate")
EVAL_METRICS = ("swd", "fid", "kid")
# Put into the logs too: TrainingMonitor leaves the scoring time out of the epoch's img/s.
EVAL_SECONDS = "eval_seconds"
MAX_EVAL_IMAGES = 512  # SWD/FID on more held-out images would cost more than an epoch


def score_generator(gan, held_out: np.ndarray, *, seed: int = 0, neighbours: TrainingNeighbours | None = None,
                    held_out_features: np.ndarray | None = None) -> dict:
    """``EVAL_COLUMNS`` figures of the GAN's inference generator (EMA when kept) against uint8 ``held_out``.

    ``nn_copy_rate`` needs ``neighbours`` (the training photos, scaled by the held-out ones);
    without them it is left out. The generated images' random-CNN features are computed once,
    for FID/KID and ``nn_copy_rate`` alike; ``held_out_features``: the held-out side's, from
    ``held_out_features(held_out)``, when the caller keeps them between scorings.
    """
    held_out = held_out[:MAX_EVAL_IMAGES]
    fake = gan.generate(len(held_out), seed=0)  # uint8 [n, S, S, 3], image seeds 0..n-1 as `nebula sample`
    extractor = neighbours.extractor if neighbours is not None else RandomCNNFeatures()
    if held_out_features is None:
        held_out_features = extractor(held_out)
    fake_features = extractor(fake)
    figures = evaluate_images(held_out, fake, metrics=EVAL_METRICS, seed=seed,
                              randcnn_features=(held_out_features, fake_features))
    if neighbours is not None:
        figures.update(neighbours.score(fake, features=fake_features).figures)
    return {k: round(float(figures[k]), 5) for k in EVAL_COLUMNS if k in figures}


def held_out_features(held_out: np.ndarray) -> np.ndarray:
    """The random-CNN features ``score_generator`` compares with: those of ``held_out[:MAX_EVAL_IMAGES]``."""
    return RandomCNNFeatures()(held_out[:MAX_EVAL_IMAGES])


class HoldoutEvaluation(keras.callbacks.Callback):
    """Every ``every`` epochs: score against ``held_out``, log the figures, keep the best checkpoint.

    ``previous_rows`` are the epoch rows of the checkpointed epochs (on resume), from which
    the best score so far is recovered. ``train_images`` (the images trained on) add
    ``nn_copy_rate``.
    """

    def __init__(self, run_dir, held_out: np.ndarray, every: int, *, train_images: np.ndarray | None = None,
                 previous_rows=(), seed: int = 0, echo=print):
        super().__init__()
        self.run_dir = run_dir
        self.held_out = held_out
        self.train_images = train_images
        self._neighbours = None  # built at the first scoring: the training photos' features, once
        self._held_out_features = None  # likewise: the held-out side of FID/KID never changes
        self.every = int(every)
        self.seed = seed
        self.echo = echo
        key = EVAL_COLUMNS[0]
        done = [float(r[key]) for r in previous_rows if r.get(key) not in (None, "")]
        self.best = min(done, default=math.inf)

    def on_epoch_end(self, epoch, logs=None):
        done = epoch + 1
        if done % self.every or self.model.stop_training:  # not due, or diverged: nothing to score
            return
        t0 = time.perf_counter()
        if self._neighbours is None and self.train_images is not None:
            # nn_copy_rate is the feature-space figure: the pixel space is not measured here
            self._neighbours = TrainingNeighbours(self.train_images, self.held_out, spaces=("features",))
        if self._held_out_features is None:
            self._held_out_features = held_out_features(self.held_out)
        figures = score_generator(self.model, self.held_out, seed=self.seed, neighbours=self._neighbours,
                                  held_out_features=self._held_out_features)
        if logs is not None:
            logs.update(figures, **{EVAL_SECONDS: time.perf_counter() - t0})  # the same dict reaches TrainingMonitor.on_epoch_end next
        key = EVAL_COLUMNS[0]
        note = ""
        if figures[key] < self.best:
            self.best = figures[key]
            save_checkpoint(self.model, self.run_dir, epoch=done, name=BEST_FILE, extra={key: figures[key]})
            note = f" (best: {BEST_FILE})"
        shown = "  ".join(f"{k} {v:.3f}" for k, v in figures.items())
        self.echo(f"epoch {done}: held-out {len(self.held_out[:MAX_EVAL_IMAGES])} images: {shown}{note}")
