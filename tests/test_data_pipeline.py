"""ImageBatches: shapes, scaling, per-epoch determinism, resume, augmentation, Keras feeding."""

from __future__ import annotations

import subprocess
import sys

import keras
import numpy as np
import pytest

from nebula_keras3.data import DataError, ImageBatches, load_training_images
from nebula_keras3.data.pipeline import augment_batch

S = 8


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    """37 distinct random uint8 images (not a multiple of the batch size)."""
    return np.random.default_rng(0).integers(0, 256, (37, S, S, 3), dtype=np.uint8)


def _as_uint8(x: np.ndarray) -> np.ndarray:
    return np.rint((x + 1.0) * 127.5).astype(np.uint8)


def _epoch(ds: ImageBatches) -> list[np.ndarray]:
    return [ds[i] for i in range(len(ds))]


def test_shapes_dtype_range_and_length(images):
    ds = ImageBatches(images, 8)
    assert len(ds) == 4  # drop_remainder: 37 // 8
    x = ds[0]
    assert isinstance(x, np.ndarray) and x.shape == (8, S, S, 3) and x.dtype == np.float32
    assert x.min() >= -1.0 and x.max() <= 1.0
    full = np.full((8, S, S, 3), 255, np.uint8)
    np.testing.assert_array_equal(ImageBatches(full, 8)[0], np.ones((8, S, S, 3), np.float32))
    np.testing.assert_array_equal(ImageBatches(full * 0, 8)[0], -np.ones((8, S, S, 3)))
    keep = ImageBatches(images, 8, drop_remainder=False)
    assert len(keep) == 5 and keep[4].shape == (5, S, S, 3) and keep[-1].shape == (5, S, S, 3)
    with pytest.raises(IndexError):
        ds[4]


def test_exact_scaling_without_shuffle_or_augment(images):
    ds = ImageBatches(images, 8, shuffle=False, augment=False)
    np.testing.assert_array_equal(ds[1], images[8:16].astype(np.float32) / 127.5 - 1)
    np.testing.assert_array_equal(_as_uint8(ds[1]), images[8:16])


def test_each_epoch_is_a_permutation_and_reshuffles(images):
    ds = ImageBatches(images, 37, augment=False)
    seen = []
    for _ in range(3):
        (x,) = _epoch(ds)
        u = _as_uint8(x)
        assert sorted(map(bytes, u)) == sorted(map(bytes, images))  # every image once
        seen.append(u)
        ds.on_epoch_end()
    assert ds.epoch == 3
    assert not np.array_equal(seen[0], seen[1]) and not np.array_equal(seen[1], seen[2])


def test_deterministic_and_independent_of_request_order(images):
    a = ImageBatches(images, 8, seed=3)
    b = ImageBatches(images, 8, seed=3)
    fwd = _epoch(a)
    back = [b[i] for i in reversed(range(len(b)))][::-1]
    for x, y in zip(fwd, back):
        np.testing.assert_array_equal(x, y)
    c = ImageBatches(images, 8, seed=4)
    assert not np.array_equal(fwd[0], c[0])


def test_resume_sees_the_uninterrupted_batches(images):
    straight = ImageBatches(images, 8, seed=7)
    history = []
    for _ in range(4):
        history.append(_epoch(straight))
        straight.on_epoch_end()
    resumed = ImageBatches(images, 8, seed=7, start_epoch=2)
    jumped = ImageBatches(images, 8, seed=7)
    jumped.set_epoch(2)
    for ds in (resumed, jumped):
        for e in (2, 3):
            for x, y in zip(_epoch(ds), history[e]):
                np.testing.assert_array_equal(x, y)
            ds.on_epoch_end()
    np.testing.assert_array_equal(straight.batch(1, 2), history[1][2])


def test_on_epoch_end_before_any_batch_is_ignored(images):
    """Model.fit resets its iterator (calling on_epoch_end) before epoch 0."""
    ds = ImageBatches(images, 8, start_epoch=5)
    ds.on_epoch_end()
    assert ds.epoch == 5
    ds.on_epoch_begin()
    ds.on_epoch_end()
    assert ds.epoch == 6


def test_augmentation_only_moves_pixels(images):
    plain = ImageBatches(images, 8, seed=1, augment=False)
    aug = ImageBatches(images, 8, seed=1, augment=True)
    changed = 0
    for i in range(len(plain)):
        p, a = _as_uint8(plain[i]), _as_uint8(aug[i])
        for u, v in zip(p, a):  # same images, each flipped/rotated: same pixel multiset
            np.testing.assert_array_equal(
                np.sort(u.reshape(-1, 3), axis=0), np.sort(v.reshape(-1, 3), axis=0)
            )
            changed += not np.array_equal(u, v)
    assert changed >= 16  # 7 in 8 images are transformed on average


def test_augment_batch_covers_the_eight_symmetries():
    img = np.arange(S * S * 3, dtype=np.uint8).reshape(1, S, S, 3)
    batch = np.repeat(img, 400, axis=0)
    out = augment_batch(batch, np.random.default_rng(0))
    distinct = {o.tobytes() for o in out}
    assert len(distinct) == 8
    want = set()
    for k in range(4):
        r = np.rot90(img[0], k)
        want |= {r.tobytes(), r[:, ::-1].tobytes(), r[::-1].tobytes()}
    assert distinct == want


def test_too_few_images_is_a_clear_error(images):
    with pytest.raises(DataError, match=r"only 5 training image\(s\).*--batch-size \(at most 5\)"):
        ImageBatches(images[:5], 8)
    assert len(ImageBatches(images[:5], 8, drop_remainder=False)) == 1
    with pytest.raises(DataError, match="uint8"):
        ImageBatches(images.astype(np.float32), 8)
    with pytest.raises(DataError, match="no training images"):
        ImageBatches(images[:0], 8)


class _MeanSquare(keras.layers.Layer):
    """Identity that adds mean(x^2) as a loss: lets fit train on x alone."""

    def call(self, x):
        self.add_loss(keras.ops.mean(keras.ops.square(x)))
        return x


def _mean_loss_model() -> keras.Model:
    inp = keras.Input((S, S, 3))
    model = keras.Model(inp, _MeanSquare()(keras.layers.Conv2D(2, 3, padding="same")(inp)))
    model.compile(optimizer="sgd")
    return model


def test_keras_predict_and_fit(images):
    """Feeds Model.predict (threaded workers too) and Model.fit on the current backend."""
    model = _mean_loss_model()
    pred = model.predict(ImageBatches(images, 8, workers=2), verbose=0)
    assert pred.shape == (32, S, S, 2)
    ds = ImageBatches(images, 8, seed=2)
    history = model.fit(ds, epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2 and np.isfinite(history.history["loss"]).all()
    assert ds.epoch == 2  # one per trained epoch, the iterator reset not counted
    model.fit(ds, epochs=3, initial_epoch=2, verbose=0)  # a second fit continues
    assert ds.epoch == 3


def test_fit_reads_the_epochs_it_trains(images):
    """Epoch k of fit reads the dataset's epoch k, in a fresh, a resumed and a synced fit."""
    seen = []

    class Tracked(ImageBatches):
        def __getitem__(self, i):
            if self._driven:  # not TensorFlow's shape peek before training
                seen.append((self.epoch, int(i)))
            return super().__getitem__(i)

    def trained_epochs(ds, **fit_kwargs):
        seen.clear()
        model.fit(ds, verbose=0, **fit_kwargs)
        return sorted({e for e, _ in seen}), sorted({i for _, i in seen})

    model = _mean_loss_model()
    assert trained_epochs(Tracked(images, 8), epochs=2) == ([0, 1], [0, 1, 2, 3])
    resumed = Tracked(images, 8, start_epoch=1)
    assert trained_epochs(resumed, epochs=3, initial_epoch=1) == ([1, 2], [0, 1, 2, 3])
    synced = Tracked(images, 8)
    callbacks = [synced.epoch_callback()]
    assert trained_epochs(synced, epochs=3, initial_epoch=1, callbacks=callbacks) == (
        [1, 2],
        [0, 1, 2, 3],
    )


def test_load_training_images(tmp_path):
    x, desc, _ = load_training_images(None, 16, num_procedural=6, seed=1)
    assert x.shape == (6, 16, 16, 3) and x.dtype == np.uint8
    assert desc == "6 procedural nebulae at 16 px (seed 1)"
    from PIL import Image

    for i in range(3):
        Image.new("RGB", (20, 20), (i * 50, 0, 0)).save(tmp_path / f"{i}.png")
    x, desc, _ = load_training_images(tmp_path, 16, progress=False, cache_dir=tmp_path / ".c")
    assert x.shape == (3, 16, 16, 3) and desc.startswith(f"3 images from {tmp_path}")
    _, desc, _ = load_training_images(tmp_path, 16, progress=False, cache_dir=tmp_path / ".c")
    assert desc.endswith("(from cache)")


def test_folder_and_procedural_modules_do_not_import_keras():
    code = (
        "import sys, nebula_keras3.data, nebula_keras3.data.folder, "
        "nebula_keras3.data.procedural; print('keras' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_a_memmap_is_read_batch_by_batch_not_copied(images, tmp_path):
    path = tmp_path / "images.npy"
    np.save(path, images)
    mapped = np.load(path, mmap_mode="r")
    on_disk, in_memory = ImageBatches(mapped, 8, seed=3), ImageBatches(images, 8, seed=3)
    assert isinstance(on_disk.images, np.memmap)  # kept on disk, not loaded
    for a, b in zip(_epoch(on_disk), _epoch(in_memory)):
        np.testing.assert_array_equal(a, b)


def test_shards_are_slices_of_the_unsharded_batch(images):
    whole = ImageBatches(images, 8, seed=5)
    parts = [ImageBatches(images, 8, seed=5, shard=(k, 2)) for k in range(2)]
    assert len(parts[0]) == len(whole)
    for i in range(len(whole)):
        np.testing.assert_array_equal(np.concatenate([p[i] for p in parts]), whole[i])
    with pytest.raises(DataError, match="divisible by 3"):
        ImageBatches(images, 8, shard=(0, 3))
