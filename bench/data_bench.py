"""Peak memory of loading and training on a large image folder; training-start time on a cached one.

    KERAS_BACKEND=torch .venv/bin/python bench/data_bench.py [--count 20000] [--image-size 128]
        [--folder /tmp/nebula-data-bench] [--steps 5] [--batch-size 64]
    .venv/bin/python bench/data_bench.py --start [--count 20000] [--image-size 128] [--rounds 3]

Builds (once) a folder of ``--count`` synthetic JPEGs of 160-256 px, then in one
process: imports Keras (the baseline), decodes the folder at ``--image-size`` into a
fresh cache (``load_image_folder``), reads one whole epoch through ``ImageBatches``,
and trains ``--steps`` GAN steps of a small model on it. A thread samples
``/proc/self/status`` every 10 ms. Printed per phase: the peak of the process's
anonymous (private) memory and of its whole resident set above the baseline, next
to the size of the decoded uint8 array. Resident file pages of the memory-mapped
cache are page cache the kernel can drop at any time, so the anonymous figure is
the memory the data actually needs.

``--start``: what a training start spends on its data once the cache is warm. Builds
(once) a folder of ``--count`` small synthetic JPEGs (64 px, in ``/tmp/nebula-start-bench``
by default), decodes it at ``--image-size`` into a cache (timed, once), then times
``--rounds`` times what ``nebula train`` does before building the model: list the folder,
map the cached array (``load_training_images``) and fingerprint it (``data_fingerprint``,
from the digest stored with the cache). For comparison it times hashing every pixel
(``pixel_digest``), what fingerprinting cost before the digest was stored. Imports no
Keras. Not a test: it measures.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def _status_kib() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0])
    return out


class PeakMemory:
    """Samples VmRSS / RssAnon / RssFile in a thread; ``phase(name)`` starts a new peak."""

    def __init__(self, interval=0.01):
        self.interval, self.peaks, self._name = interval, {}, None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            self.sample()
            time.sleep(self.interval)

    def sample(self):
        now = _status_kib()
        if self._name is not None:
            peak = self.peaks.setdefault(self._name, dict(now))
            for k, v in now.items():
                peak[k] = max(peak[k], v)

    def phase(self, name):
        self.sample()
        self._name = name
        self.sample()

    def stop(self):
        self.sample()
        self._stop.set()
        self._thread.join()


def make_folder(folder: Path, count: int, seed: int = 0, sizes: tuple[int, int] = (160, 256)) -> None:
    """``count`` JPEGs of random size ``sizes[0]..sizes[1]`` px: smooth colour fields with some noise."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    have = len(list(folder.glob("*.jpg")))
    rng = np.random.default_rng(seed)
    for i in range(count):
        w, h = rng.integers(sizes[0], sizes[1] + 1, 2)
        if i < have:
            continue
        coarse = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
        im = Image.fromarray(coarse, "RGB").resize((int(w), int(h)), Image.Resampling.BICUBIC)
        noisy = np.asarray(im, np.int16) + rng.integers(-12, 13, (int(h), int(w), 3))
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(folder / f"{i:06d}.jpg", quality=90)


def start_bench(args) -> None:
    """Training-start time on a warm cache: list + map + fingerprint, against a full pixel hash."""
    from nebula_keras3.data import data_fingerprint, load_training_images
    from nebula_keras3.data.fingerprint import pixel_digest

    folder = args.folder or Path(tempfile.gettempdir()) / "nebula-start-bench"
    t = time.perf_counter()
    make_folder(folder, args.count, sizes=(64, 64))
    print(f"folder: {folder} ({args.count} JPEGs of 64 px, ready in {time.perf_counter() - t:.0f} s)")
    cache = Path(tempfile.mkdtemp(prefix="nebula-start-bench-cache-"))
    try:
        t = time.perf_counter()
        images, description, _ = load_training_images(str(folder), args.image_size, cache_dir=cache, progress=False)
        data_fingerprint(images)
        print(f"cold start (decode + write the cache, digest while writing): {time.perf_counter() - t:.1f} s; "
              f"{description}, {images.nbytes / 2**20:.0f} MiB of pixels")
        del images
        starts, fingerprints = [], []
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            images, description, _ = load_training_images(str(folder), args.image_size, cache_dir=cache, progress=False)
            t1 = time.perf_counter()
            fingerprint = data_fingerprint(images)
            starts.append(time.perf_counter() - t0)
            fingerprints.append(time.perf_counter() - t1)
        assert "(from cache)" in description
        t = time.perf_counter()
        assert pixel_digest(images) == fingerprint["sha256"]
        full = time.perf_counter() - t
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    print(f"warm start, median of {args.rounds}: {np.median(starts):.3f} s "
          f"(of which data_fingerprint {np.median(fingerprints) * 1e3:.2f} ms)")
    print(f"hashing every pixel instead (page cache warm): {full:.2f} s")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--folder", type=Path, default=None,
                        help="default: /tmp/nebula-data-bench (/tmp/nebula-start-bench with --start)")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--start", action="store_true", help="time a training start on a warm cache instead")
    parser.add_argument("--rounds", type=int, default=3, help="--start: warm starts timed")
    args = parser.parse_args()
    if args.start:
        start_bench(args)
        return
    args.folder = args.folder or Path(tempfile.gettempdir()) / "nebula-data-bench"

    t = time.perf_counter()
    make_folder(args.folder, args.count)
    print(f"folder: {args.folder} ({args.count} JPEGs, ready in {time.perf_counter() - t:.0f} s)")

    import keras

    from nebula_keras3.data import ImageBatches, load_image_folder
    from nebula_keras3.training.config import TrainConfig
    from nebula_keras3.training.trainer import build_gan

    class FirstBatches(keras.utils.PyDataset):
        def __init__(self, batches, limit):
            super().__init__()
            self.batches, self.limit = batches, limit

        def __len__(self):
            return min(self.limit, len(self.batches))

        def __getitem__(self, i):
            return self.batches[i]

    meter = PeakMemory()
    time.sleep(0.05)
    base = _status_kib()
    cache = Path(tempfile.mkdtemp(prefix="nebula-data-bench-cache-"))
    timings = {}
    try:
        meter.phase("decode")
        t = time.perf_counter()
        loaded = load_image_folder(args.folder, args.image_size, cache_dir=cache, progress=False)
        timings["decode"] = time.perf_counter() - t
        images = loaded.images
        decoded_mib = images.nbytes / 2**20

        meter.phase("epoch")
        batches = ImageBatches(images, args.batch_size, seed=0)
        t = time.perf_counter()
        for i in range(len(batches)):
            batches[i]
        timings["epoch"] = time.perf_counter() - t

        meter.phase("train")
        config = TrainConfig.from_preset(
            "tiny", image_size=args.image_size, batch_size=args.batch_size, epochs=1
        )
        gan = build_gan(config)
        t = time.perf_counter()
        gan.fit(FirstBatches(batches, args.steps), epochs=1, verbose=0, shuffle=False)
        timings["train"] = time.perf_counter() - t
        meter.stop()
    finally:
        shutil.rmtree(cache, ignore_errors=True)

    print(
        f"backend {keras.backend.backend()}: {len(images)} images at {args.image_size} px, "
        f"decoded uint8 array {decoded_mib:.0f} MiB ({type(images).__name__}); "
        f"baseline after imports: RSS {base['VmRSS'] / 1024:.0f} MiB, anonymous {base['RssAnon'] / 1024:.0f} MiB"
    )
    print(f"{'phase':<8}{'seconds':>9}{'peak anon +MiB':>16}{'/ decoded':>11}{'peak RSS +MiB':>15}{'/ decoded':>11}")
    for name, peak in meter.peaks.items():
        anon = (peak["RssAnon"] - base["RssAnon"]) / 1024
        rss = (peak["VmRSS"] - base["VmRSS"]) / 1024
        print(
            f"{name:<8}{timings.get(name, float('nan')):>9.1f}{anon:>16.0f}{anon / decoded_mib:>11.2f}"
            f"{rss:>15.0f}{rss / decoded_mib:>11.2f}"
        )
    import resource

    print(f"ru_maxrss (whole process, incl. mapped cache pages): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
