"""FID's Frechet distance: ours against the d x d forms, on feature sets of FID's sizes.

    .venv/bin/python bench/fid_bench.py [--sizes 500,1461,5000] [--dims 960,2048] [--rounds 3]

``metrics.features.frechet_distance`` works on the n_a x n_b cross-Gram matrix of the centred
sets when that is smaller than d x d (``tr (S_a S_b)^1/2`` is the sum of its singular values,
scaled), and on the d x d covariances otherwise. The references, transcribed in this file:
the d x d eigh form this project used before, and pytorch-fid's ``calculate_frechet_distance``
(``scipy.linalg.sqrtm`` of ``S_a S_b``; needs scipy). Features are correlated Gaussians,
seeded. Prints seconds per call (best of ``--rounds``), the distances and their relative
differences. Not a test: it measures.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

from nebula_keras3.metrics.features import frechet_distance
from swd_bench import best_time  # bench/: run as a script, its folder is on the path


def eigh_form(a: np.ndarray, b: np.ndarray) -> float:
    """The d x d form: tr (S_a^1/2 S_b S_a^1/2)^1/2 with eigh (this project's before)."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(cov_a)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    cross = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
    tr_sqrt = float(np.sum(np.sqrt(np.clip(cross, 0, None))))
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2 * tr_sqrt)


def pytorch_fid_form(a: np.ndarray, b: np.ndarray, eps: float = 1e-6) -> float:
    """pytorch-fid's calculate_frechet_distance (scipy.linalg.sqrtm of S_a S_b)."""
    from scipy import linalg

    mu1, mu2 = a.mean(0), b.mean(0)
    sigma1, sigma2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    diff = mu1 - mu2
    with warnings.catch_warnings():  # SciPy deprecates disp=, which pytorch-fid passes
        warnings.simplefilter("ignore", DeprecationWarning)
        covmean, _ = linalg.sqrtm(sigma1.dot(sigma2), disp=False)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def features(n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    return rng.normal(size=(n, d)) @ mix + rng.normal(size=d) * 0.1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="500,1461,5000", help="images per set")
    parser.add_argument("--dims", default="960,2048", help="feature sizes (random-CNN, Inception)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    try:
        import scipy  # noqa: F401

        references = {"eigh d x d": eigh_form, "pytorch-fid": pytorch_fid_form}
    except ImportError:
        references = {"eigh d x d": eigh_form}
    print("| n per set | d | ours (s) | " + " | ".join(f"{k} (s)" for k in references) + " | largest relative difference |")
    print("|---:|---:|---:|" + "---:|" * len(references) + "---:|")
    for d in (int(x) for x in args.dims.split(",")):
        for n in (int(x) for x in args.sizes.split(",")):
            a, b = features(n, d, 0), features(n, d, 1) * 1.1
            ours_s, ours = best_time(lambda: frechet_distance(a, b), args.rounds)
            cells, worst = [], 0.0
            for fn in references.values():
                s, v = best_time(lambda fn=fn: fn(a, b), args.rounds)
                cells.append(f"{s:.3f}")
                worst = max(worst, abs(v - ours) / abs(v))
            print(f"| {n} | {d} | {ours_s:.3f} | " + " | ".join(cells) + f" | {worst:.1e} |", flush=True)


if __name__ == "__main__":
    main()
