"""data_fingerprint: the cached folder's digest is stored once, so a training start hashes no pixels."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nebula_keras3.data import cache, data_fingerprint, fingerprint, load_image_folder, load_training_images


def _folder(path: Path, n: int, *, seed: int = 0, junk: bool = False) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(path / f"im{i:02d}.png")
    if junk:
        (path / "notes.txt").write_text("not an image")
    return path


def _full_hash(images: np.ndarray) -> str:
    """The digest as data.json has always recorded it: dtype and shape, then every byte."""
    a = np.array(images)
    return hashlib.sha256(repr((a.dtype.str, a.shape)).encode() + a.tobytes()).hexdigest()


class PixelSpy:
    """Counts full pixel reads (``pixel_digest``) wherever the data package calls it."""

    def __init__(self, monkeypatch, fail: bool = False):
        self.calls, self.fail, real = 0, fail, fingerprint.pixel_digest

        def spy(images):
            self.calls += 1
            if self.fail:
                raise AssertionError("pixels were hashed")
            return real(images)

        monkeypatch.setattr(fingerprint, "pixel_digest", spy)
        monkeypatch.setattr(cache, "pixel_digest", spy)


@pytest.mark.backend_independent
@pytest.mark.filterwarnings("ignore::nebula_keras3.data.SkippedImagesWarning")
@pytest.mark.parametrize("junk", [False, True], ids=["all-used", "one-skipped"])
def test_start_on_a_cached_folder_reads_no_pixels(tmp_path, monkeypatch, junk):
    data = _folder(tmp_path / "data", 6, junk=junk)
    kw = dict(cache_dir=tmp_path / "cache", progress=False)
    built, _, _ = load_training_images(str(data), 32, **kw)  # decodes and writes the cache
    first = data_fingerprint(built)
    assert first == {"image_count": 6, "shape": [32, 32, 3], "sha256": _full_hash(built)}

    PixelSpy(monkeypatch, fail=True)
    images, description, _ = load_training_images(str(data), 32, **kw)  # what a training start does
    assert "(from cache)" in description
    assert data_fingerprint(images) == first


@pytest.mark.backend_independent
def test_views_copies_and_in_memory_arrays_are_hashed_in_full(tmp_path, monkeypatch):
    data = _folder(tmp_path / "data", 5)
    cached = load_image_folder(data, 32, cache_dir=tmp_path / "cache", progress=False).images
    stored = data_fingerprint(cached)["sha256"]
    spy = PixelSpy(monkeypatch)
    assert data_fingerprint(np.array(cached))["sha256"] == stored  # same pixels, same digest
    assert data_fingerprint(cached[::-1])["sha256"] == _full_hash(cached[::-1]) != stored
    assert data_fingerprint(cached[:4])["image_count"] == 4
    memory = load_image_folder(data, 32, use_cache=False, progress=False).images
    assert data_fingerprint(memory)["sha256"] == stored
    assert spy.calls == 4
    assert data_fingerprint(cached)["sha256"] == stored and spy.calls == 4


@pytest.mark.backend_independent
def test_changed_data_changes_the_fingerprint(tmp_path):
    data = _folder(tmp_path / "data", 4)
    kw = dict(cache_dir=tmp_path / "cache", progress=False)
    before = data_fingerprint(load_image_folder(data, 32, **kw).images)
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(data / "im01.png")
    st = os.stat(data / "im01.png")
    os.utime(data / "im01.png", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    edited = load_image_folder(data, 32, **kw)
    assert not edited.from_cache
    after = data_fingerprint(edited.images)
    assert after["image_count"] == 4 and after["sha256"] != before["sha256"]
    assert after["sha256"] == _full_hash(edited.images)


@pytest.mark.backend_independent
def test_an_entry_without_a_stored_digest_gets_one_on_its_first_hit(tmp_path, monkeypatch):
    data = _folder(tmp_path / "data", 3)
    kw = dict(cache_dir=tmp_path / "cache", progress=False)
    expected = data_fingerprint(load_image_folder(data, 32, **kw).images)
    (meta,) = (tmp_path / "cache").rglob("images-*.json")
    info = json.loads(meta.read_text())
    meta.write_text(json.dumps({"files": info["files"], "skipped": info["skipped"]}))  # an older entry
    spy = PixelSpy(monkeypatch)
    hit = load_image_folder(data, 32, **kw)
    assert hit.from_cache and spy.calls == 1 and data_fingerprint(hit.images) == expected
    assert json.loads(meta.read_text())["sha256"] == expected["sha256"]
    again = load_image_folder(data, 32, **kw)
    assert again.from_cache and data_fingerprint(again.images) == expected and spy.calls == 1


@pytest.mark.backend_independent
def test_a_cache_file_changed_after_its_digest_is_rebuilt(tmp_path):
    data = _folder(tmp_path / "data", 3)
    kw = dict(cache_dir=tmp_path / "cache", progress=False)
    first = load_image_folder(data, 32, **kw)
    (npy,) = (tmp_path / "cache").rglob("images-*.npy")
    st = os.stat(npy)
    os.utime(npy, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # rewritten by something else
    again = load_image_folder(data, 32, **kw)
    assert not again.from_cache
    assert data_fingerprint(again.images) == data_fingerprint(np.array(first.images))


@pytest.mark.backend_independent  # the data cache
def test_training_start_on_a_cached_folder_hashes_no_pixels(tmp_path, monkeypatch):
    """The trainer's own start path: data.json gets the stored digest, no pixel is hashed."""
    from conftest import tiny_config

    from nebula_keras3.training import trainer

    monkeypatch.setenv("NEBULA_CACHE_DIR", str(tmp_path / "cache"))
    data = _folder(tmp_path / "data", 8)
    warm = load_image_folder(data, 32, progress=False)  # the cache a previous run left
    expected = {"image_count": 8, "shape": [32, 32, 3], "sha256": _full_hash(warm.images)}
    PixelSpy(monkeypatch, fail=True)
    run = tmp_path / "run"
    trainer.train(tiny_config(data=str(data), steps_per_epoch=1), run, progress=False, echo=lambda *_: None)
    assert json.loads((run / "data.json").read_text()) == expected
