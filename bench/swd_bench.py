"""SWD speed: 1,000 vs 1,000 images at 64 px, ours vs ProGAN's own numpy code in the same run.

    .venv/bin/python bench/swd_bench.py [-n 1000] [--image-size 64] [--rounds 1] [--no-reference]

Real images come from ``$NEBULA_DATA`` or ``../shared/data/nebula`` (two disjoint
seeded halves, read like training reads them), else 2 x n procedural nebulae. The
reference is ``metrics/sliced_wasserstein.py`` of tkarras/progressive_growing_of_gans
transcribed as is (scipy filtering, ``np.ogrid`` gathering, sorting along axis 0);
it needs scipy. Prints seconds per call (best of ``--rounds``), both SWDs and the
ratio. Not a test: it measures.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from nebula_keras3.metrics.swd import sliced_wasserstein_distance

REPO = Path(__file__).resolve().parents[1]


def load_images(n: int, size: int) -> tuple[np.ndarray, np.ndarray, str]:
    env = os.environ.get("NEBULA_DATA")
    folder = Path(env) if env else REPO.parent / "shared" / "data" / "nebula"
    if folder.is_dir():
        from nebula_keras3.data import load_image_folder

        images = load_image_folder(folder, size, progress=False).images
        if len(images) >= 2 * n:
            order = np.random.default_rng(0).permutation(len(images))
            return images[order[:n]], images[order[n : 2 * n]], f"{folder} (two disjoint halves)"
        if len(images) >= n:
            from nebula_keras3.data import procedural_nebulae

            return images[:n], procedural_nebulae(n, size, seed=1), f"{folder} vs procedural nebulae"
    from nebula_keras3.data import procedural_nebulae

    return procedural_nebulae(n, size, seed=0), procedural_nebulae(n, size, seed=1), "procedural nebulae"


def progan_swd(a_nhwc: np.ndarray, b_nhwc: np.ndarray, seed: int = 0) -> float:
    """ProGAN's API.feed/end for one minibatch of each side (its code, NCHW)."""
    import scipy.ndimage

    np.random.seed(seed)
    gauss = np.float32([[1, 4, 6, 4, 1], [4, 16, 24, 16, 4], [6, 24, 36, 24, 6],
                        [4, 16, 24, 16, 4], [1, 4, 6, 4, 1]]) / 256.0

    def pyr_down(mb):
        return scipy.ndimage.convolve(mb, gauss[np.newaxis, np.newaxis, :, :], mode="mirror")[:, :, ::2, ::2]

    def pyr_up(mb):
        s = mb.shape
        res = np.zeros((s[0], s[1], s[2] * 2, s[3] * 2), mb.dtype)
        res[:, :, ::2, ::2] = mb
        return scipy.ndimage.convolve(res, gauss[np.newaxis, np.newaxis, :, :] * 4.0, mode="mirror")

    def pyramid(mb, levels):
        pyr = [np.float32(mb)]
        for _ in range(1, levels):
            pyr.append(pyr_down(pyr[-1]))
            pyr[-2] -= pyr_up(pyr[-1])
        return pyr

    def descriptors(mb, nhood_size=7, nhoods_per_image=128):
        s = mb.shape
        n = nhoods_per_image * s[0]
        h = nhood_size // 2
        nhood, chan, x, y = np.ogrid[0:n, 0:3, -h : h + 1, -h : h + 1]
        img = nhood // nhoods_per_image
        x = x + np.random.randint(h, s[3] - h, size=(n, 1, 1, 1))
        y = y + np.random.randint(h, s[2] - h, size=(n, 1, 1, 1))
        idx = ((img * s[1] + chan) * s[2] + y) * s[3] + x
        desc = mb.flat[idx]
        desc -= np.mean(desc, axis=(0, 2, 3), keepdims=True)
        desc /= np.std(desc, axis=(0, 2, 3), keepdims=True)
        return desc.reshape(desc.shape[0], -1)

    def sliced(a, b):
        results = []
        for _ in range(4):
            dirs = np.random.randn(a.shape[1], 128)
            dirs /= np.sqrt(np.sum(np.square(dirs), axis=0, keepdims=True))
            dirs = dirs.astype(np.float32)
            pa, pb = np.sort(np.matmul(a, dirs), axis=0), np.sort(np.matmul(b, dirs), axis=0)
            results.append(np.mean(np.abs(pa - pb)))
        return np.mean(results)

    levels, res = 0, a_nhwc.shape[1]
    while res >= 16:
        levels, res = levels + 1, res // 2
    pa = pyramid(a_nhwc.transpose(0, 3, 1, 2), levels)
    pb = pyramid(b_nhwc.transpose(0, 3, 1, 2), levels)
    return float(np.mean([sliced(descriptors(la), descriptors(lb)) * 1e3 for la, lb in zip(pa, pb)]))


def best_time(fn, rounds):
    times, value = [], None
    for _ in range(rounds):
        t = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - t)
    return min(times), value


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-n", type=int, default=1000)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--no-reference", action="store_true", help="Skip ProGAN's code (scipy).")
    args = p.parse_args()
    a, b, source = load_images(args.n, args.image_size)
    print(f"{args.n} vs {args.n} images at {args.image_size} px from {source}; {os.cpu_count()} CPUs")
    ours_s, ours = best_time(lambda: sliced_wasserstein_distance(a, b, seed=0)["swd"], args.rounds)
    print(f"nebula_keras3.metrics.swd: {ours_s:7.2f} s   swd {ours:.3f}")
    if not args.no_reference:
        ref_s, ref = best_time(lambda: progan_swd(a, b), args.rounds)
        print(f"ProGAN sliced_wasserstein: {ref_s:7.2f} s   swd {ref:.3f}")
        print(f"speed-up {ref_s / ours_s:.1f}x; SWDs differ by {100 * abs(ours - ref) / ref:.1f}% (random draws)")


if __name__ == "__main__":
    main()
