"""Feature-space metrics: FID, KID and precision/recall/density/coverage.

The features come from ``RandomCNNFeatures``: a small convolutional network whose
weights are drawn with numpy from a fixed seed and never trained, run in numpy.
It is the same network, bit for bit, on every machine and whatever
``KERAS_BACKEND`` is, and it costs a second or two per thousand 64 px images on a
CPU. Random-network features do separate image distributions (colour, texture and
layout statistics at four scales), but the numbers are on their own scale:
**FID/KID on these features are not comparable with published (InceptionV3) FID
or KID.** For those, pass real InceptionV3 weights (``metrics.inception``).

The functions below take any two feature matrices ``[n, d]``.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

FEATURE_SEED = 20260101  # changing it changes every random-CNN figure: don't
FEATURE_INPUT = 64  # images are resized to 64x64 before the network
FEATURE_WIDTHS = (32, 64, 128, 256)  # channels of the four stride-2 3x3 convolutions
KID_SUBSET_SIZE = 1000
KID_SUBSETS = 100
PRDC_K = 5


RESAMPLING = {"lanczos": Image.Resampling.LANCZOS, "bicubic": Image.Resampling.BICUBIC,
              "bilinear": Image.Resampling.BILINEAR, "nearest": Image.Resampling.NEAREST}  # PIL's filters


def resize_images(images: np.ndarray, size: int, resample: str = "lanczos") -> np.ndarray:
    """uint8 ``[n, S, S, 3]`` -> ``[n, size, size, 3]`` with PIL's ``resample`` filter (a no-op at ``size``)."""
    if resample not in RESAMPLING:
        raise ValueError(f"unknown resampling filter {resample!r}; choose one of {', '.join(RESAMPLING)}")
    images = np.asarray(images)
    if images.shape[1:3] == (size, size):
        return images
    return np.stack([np.asarray(Image.fromarray(im).resize((size, size), RESAMPLING[resample]))
                     for im in images])


class RandomCNNFeatures:
    """uint8 ``[n, S, S, 3]`` -> float64 features ``[n, 2 * sum(FEATURE_WIDTHS)]``.

    Stages (input 64x64x3 scaled to [-1, 1]): four 3x3 convolutions with stride 2
    and zero padding, each followed by a leaky ReLU (0.2): 32x32x32 -> 16x16x64 ->
    8x8x128 -> 4x4x256. Weights ~ N(0, 2 / fan_in) from ``np.random.default_rng(seed)``,
    no biases. The features are each stage's per-channel spatial mean and standard
    deviation, concatenated (960 numbers).
    """

    def __init__(self, seed: int = FEATURE_SEED, widths=FEATURE_WIDTHS, input_size: int = FEATURE_INPUT):
        rng = np.random.default_rng(seed)
        self.input_size = int(input_size)
        self.kernels = []
        cin = 3
        for cout in widths:
            fan_in = 9 * cin
            self.kernels.append((rng.standard_normal((fan_in, cout)) * np.sqrt(2.0 / fan_in)).astype(np.float32))
            cin = cout
        self.dim = 2 * sum(widths)


    @staticmethod
    def _conv_s2(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
        """[n, H, W, Cin] -> [n, H/2, W/2, Cout]: 3x3, stride 2, zero padding 1, as one matmul."""
        n, h, w, _ = x.shape
        xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        patches = np.concatenate(
            [xp[:, dy : dy + h : 2, dx : dx + w : 2] for dy in range(3) for dx in range(3)], axis=-1
        )  # [n, H/2, W/2, 9*Cin]
        return patches @ kernel

    def __call__(self, images: np.ndarray, batch_size: int = 200) -> np.ndarray:
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(f"images must be uint8 [n, S, S, 3], got {images.dtype} {list(images.shape)}")
        out = []
        for i in range(0, len(images), batch_size):
            x = resize_images(images[i : i + batch_size], self.input_size).astype(np.float32) / 127.5 - 1.0
            stats = []
            for kernel in self.kernels:
                x = self._conv_s2(x, kernel)
                x = np.maximum(x, 0.2 * x)  # leaky ReLU
                stats += [x.mean(axis=(1, 2)), x.std(axis=(1, 2))]
            out.append(np.concatenate(stats, axis=-1).astype(np.float64))
        return np.concatenate(out, axis=0) if out else np.zeros((0, self.dim))


# --- Frechet distance ------------------------------------------------------------------


def _sqrtm_psd(m: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(m)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """FID between Gaussians fitted to feature sets ``a`` and ``b`` (``[n, d]`` each).

    ``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^1/2)``. With ``A``, ``B`` the centred sets,
    ``S_a = A'A / (n_a - 1)``, and the nonzero eigenvalues of ``S_a S_b`` are those of
    ``M M'`` with ``M = A B' / sqrt((n_a - 1)(n_b - 1))``, so ``tr (S_a S_b)^1/2`` is the sum of
    ``M``'s singular values: an ``n_a x n_b`` problem where that is smaller than the ``d x d`` one,
    ``tr (S_a^1/2 S_b S_a^1/2)^1/2`` (symmetric, so eigh is exact enough), used otherwise.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    mu_a, mu_b = a.mean(0), b.mean(0)
    (na, d), nb = a.shape, len(b)
    if na < 2 or nb < 2:
        raise ValueError(f"FID needs at least 2 feature rows per set, got {na} and {nb}")
    ca, cb = a - mu_a, b - mu_b
    if na * nb < d * d:
        cross = np.linalg.svd(ca @ cb.T, compute_uv=False)
        tr_sqrt = float(cross.sum()) / np.sqrt((na - 1) * (nb - 1))
    else:
        cov_a, cov_b = ca.T @ ca / (na - 1), cb.T @ cb / (nb - 1)
        root_a = _sqrtm_psd(cov_a)
        cross = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
        tr_sqrt = float(np.sum(np.sqrt(np.clip(cross, 0, None))))
    trace_a, trace_b = np.sum(ca * ca) / (na - 1), np.sum(cb * cb) / (nb - 1)
    fid = float(np.sum((mu_a - mu_b) ** 2) + trace_a + trace_b - 2 * tr_sqrt)
    return max(fid, 0.0)


# --- Kernel inception distance ---------------------------------------------------------


def kernel_distance(a: np.ndarray, b: np.ndarray, *, subset_size: int = KID_SUBSET_SIZE,
                    subsets: int = KID_SUBSETS, seed: int = 0) -> tuple[float, float]:
    """KID (Binkowski et al. 2018): unbiased MMD^2, kernel ``(x.y / d + 1)^3``.

    Mean and standard deviation over ``subsets`` random subsets of
    ``min(subset_size, n)`` rows of each set (one subset when that is all of both).
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    d = a.shape[1]
    m = min(subset_size, len(a), len(b))
    if m < 2:
        raise ValueError("KID needs at least 2 images per set")
    # Full kernel matrices once; subsets index into them.
    k_aa = (a @ a.T / d + 1) ** 3
    k_bb = (b @ b.T / d + 1) ** 3
    k_ab = (a @ b.T / d + 1) ** 3
    if m == len(a) == len(b):
        subsets = 1
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(subsets):
        ia = rng.choice(len(a), m, replace=False) if m < len(a) else np.arange(m)
        ib = rng.choice(len(b), m, replace=False) if m < len(b) else np.arange(m)
        kaa = k_aa[np.ix_(ia, ia)]
        kbb = k_bb[np.ix_(ib, ib)]
        kab = k_ab[np.ix_(ia, ib)]
        mmd = ((kaa.sum() - np.trace(kaa)) + (kbb.sum() - np.trace(kbb))) / (m * (m - 1)) - 2 * kab.mean()
        values.append(mmd)
    return float(np.mean(values)), float(np.std(values))


# --- precision / recall / density / coverage -------------------------------------------


def _pairwise_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    sq = np.sum(a**2, 1)[:, None] + np.sum(b**2, 1)[None, :] - 2 * a @ b.T
    return np.sqrt(np.clip(sq, 0, None))


def _kth_neighbour_distance(x: np.ndarray, k: int) -> np.ndarray:
    """Distance from each row to its k-th nearest other row (index k counts the row itself at 0)."""
    return np.partition(_pairwise_distances(x, x), k, axis=1)[:, k]


def prdc(real: np.ndarray, fake: np.ndarray, *, k: int = PRDC_K) -> dict:
    """Precision, recall, density, coverage (Naeem et al. 2020) with k-NN balls.

    precision: share of fakes inside some real's k-NN ball; recall: share of reals
    inside some fake's k-NN ball; density: mean number of real balls holding a fake,
    divided by k; coverage: share of reals whose ball holds at least one fake.
    """
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    if min(len(real), len(fake)) <= k:
        raise ValueError(f"precision/recall need more than k={k} images per set")
    real_radii = _kth_neighbour_distance(real, k)  # [n_real]
    fake_radii = _kth_neighbour_distance(fake, k)  # [n_fake]
    dist = _pairwise_distances(real, fake)  # [n_real, n_fake]
    inside_real = dist < real_radii[:, None]
    return {
        "precision": float(inside_real.any(axis=0).mean()),
        "recall": float((dist < fake_radii[None, :]).any(axis=1).mean()),
        "density": float(inside_real.sum(axis=0).mean() / k),
        "coverage": float((dist.min(axis=1) < real_radii).mean()),
    }
