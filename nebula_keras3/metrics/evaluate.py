"""Score generated images against real ones: the Python API under ``nebula evaluate``.

``evaluate_images(real, fake)`` takes two uint8 ``[n, S, S, 3]`` arrays and returns
a flat dict of figures (see ``DESCRIPTIONS``). The loaders produce those arrays:
the real side from an image folder (centre-cropped and resized exactly as
training reads it, ``data.folder.load_image_folder``) or a ``.npy``; the generated
side from a run folder / ``.keras`` file (Keras), an ``.onnx`` file (ONNX Runtime)
or a folder / ``.npy`` of images. Keras is imported only for ``--model`` and
InceptionV3.

``memorisation`` finds each generated image's nearest training images
(``metrics.memorisation``) and ``resolution_swd`` scores samples at another model's
size (``bench/quality.py``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from nebula_keras3.metrics.features import (
    PRDC_K,
    RandomCNNFeatures,
    frechet_distance,
    kernel_distance,
    prdc,
)
from nebula_keras3.metrics.memorisation import COPY_QUANTILE
from nebula_keras3.metrics.swd import sliced_wasserstein_distance

METRICS = ("swd", "fid", "kid", "prdc")
DEFAULT_NUM = 1000
DEFAULT_FOLDER_SIZE = 64  # --image-size when both sides are folders of photos
DEFAULT_HOLDOUT = 0.1  # memorisation: share of --data held out for the scale when nothing says otherwise
NEAREST_ROWS = 16  # generated images (the closest cases) in the --nearest picture
MIN_IMAGE_SIZE = 16

# Every figure evaluate_images can return, with the one-line meaning the table prints.
DESCRIPTIONS = {
    "swd": "sliced Wasserstein distance x1e3, mean over pyramid levels (ProGAN; lower is better)",
    "swd_{res}": "SWD x1e3 of the {res} px Laplacian level",
    "fid_randcnn": "FID on fixed random-CNN features (not comparable with published FID; lower is better)",
    "kid_randcnn": "KID x1e3 on random-CNN features: unbiased MMD^2, cubic kernel (lower is better)",
    "kid_randcnn_std": "std of kid_randcnn over subsets",
    "precision": f"share of generated images inside the real manifold (k={PRDC_K}; random-CNN features)",
    "recall": "share of real images inside the generated manifold",
    "density": "how many real neighbourhoods hold each generated image, / k (about 1 when matched)",
    "coverage": "share of real images with a generated image in their neighbourhood",
    "fid_inception": "FID on InceptionV3 pool features (the published recipe, with your weights)",
    "kid_inception": "KID x1e3 on InceptionV3 pool features",
    "kid_inception_std": "std of kid_inception over subsets",
    "nn_copy_rate": f"share of generated images as close to a training image as the closest {COPY_QUANTILE:.0%} "
                    f"of held-out photos come (random-CNN features; copies give 1, new photos about {COPY_QUANTILE})",
    "nn_distance_ratio_median": "median nearest-training distance of generated images / that of held-out "
                                "photos (features; about 1 = as novel as new photos, 0 = copies)",
    "nn_copy_rate_pixel": "nn_copy_rate in 64 px pixel space",
    "nn_distance_ratio_median_pixel": "nn_distance_ratio_median in 64 px pixel space",
    "nn_threshold": "copy threshold: that quantile of held-out nearest-training distances (features)",
    "nn_threshold_pixel": "copy threshold in pixel space (RMS uint8 levels)",
    "nn_held_out_median": "median held-out nearest-training distance (features)",
    "nn_held_out_median_pixel": "median held-out nearest-training distance (RMS uint8 levels)",
    "nn_copy_quantile": "quantile of held-out distances that sets the copy threshold",
}


class EvaluationError(ValueError):
    """Inputs that cannot be scored; the message names the problem in one line."""


def _describe(key: str) -> str:
    if key.startswith("swd_"):
        return DESCRIPTIONS["swd_{res}"].format(res=key[4:])
    return DESCRIPTIONS.get(key, "")


def evaluate_images(real: np.ndarray, fake: np.ndarray, *, metrics=METRICS, seed: int = 0,
                    inception_weights: str | os.PathLike | None = None,
                    inception_size: int | None = None, randcnn_features: tuple | None = None) -> dict:
    """Figures for generated images ``fake`` against ``real`` (uint8 ``[n, S, S, 3]``, same shape).

    Args:
        metrics: any of ``METRICS``; ``fid``/``kid``/``prdc`` use the random-CNN features
            (and ``fid``/``kid`` also InceptionV3 when ``inception_weights`` is given).
        seed: seeds SWD's neighbourhoods and directions and KID's subsets.
        inception_weights: an InceptionV3 (no top) weights file; nothing is downloaded.
        inception_size: InceptionV3 input side (default 299; tests use smaller).
        randcnn_features: ``(real, fake)``, these very images' ``RandomCNNFeatures`` when the
            caller has them already (it scores them further); default: computed here.
    """
    unknown = set(metrics) - set(METRICS)
    if unknown:
        raise EvaluationError(f"unknown metric(s) {', '.join(sorted(unknown))}; choose from {', '.join(METRICS)}")
    real, fake = np.asarray(real), np.asarray(fake)
    for name, x in (("real", real), ("generated", fake)):
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] != 3 or x.shape[1] != x.shape[2]:
            raise EvaluationError(f"{name} images must be uint8 [n, S, S, 3], got {x.dtype} {list(x.shape)}")
    if real.shape != fake.shape:
        raise EvaluationError(
            f"real and generated sets differ: {real.shape[0]} images of {real.shape[1]} px vs "
            f"{fake.shape[0]} of {fake.shape[1]} px"
        )
    result: dict = {"n": int(real.shape[0]), "image_size": int(real.shape[1])}
    inception = None
    if inception_weights is not None and {"fid", "kid"} & set(metrics):
        from nebula_keras3.metrics.inception import INCEPTION_SIZE, InceptionFeatures

        # First, so that a bad file fails before minutes of other work.
        inception = InceptionFeatures(inception_weights, image_size=inception_size or INCEPTION_SIZE)
    try:
        if "swd" in metrics:
            result.update(sliced_wasserstein_distance(real, fake, seed=seed))
        if {"fid", "kid", "prdc"} & set(metrics):
            if randcnn_features is None:
                extractor = RandomCNNFeatures()
                randcnn_features = extractor(real), extractor(fake)
            real_f, fake_f = randcnn_features
            if (len(real_f), len(fake_f)) != (len(real), len(fake)):
                raise EvaluationError(f"randcnn_features hold {len(real_f)} and {len(fake_f)} rows "
                                      f"for {len(real)} real and {len(fake)} generated images")
            result.update(_feature_metrics(real_f, fake_f, "randcnn", metrics, seed))
        if inception is not None:
            only = set(metrics) - {"prdc"}
            result.update(_feature_metrics(inception(real), inception(fake), "inception", only, seed))
    except ValueError as e:
        raise EvaluationError(str(e)) from None
    return result


def resolution_swd(real: np.ndarray, fake: np.ndarray, *, seed: int = 0, resample: str = "lanczos") -> dict:
    """SWD x1e3 per pyramid level at the real images' size (``swd_<res>`` from it down to 16 px,
    and their mean ``swd``), the generated images resized to that size first (PIL's
    ``resample`` filter, LANCZOS by default).

    So a 64 px model's samples upscaled to 128 px are scored on the same pyramid as a
    128 px model's: whatever detail the finest levels find beyond the upscale is the model's.
    The finest level rewards sharp edges of any kind, though: SWD normalises each set's
    descriptors, so blocks (a nearest-neighbour upscale) score better there than a smooth
    upscale does (docs/RESULTS.md, "What the finest levels reward"). Look at the images too.
    """
    from nebula_keras3.metrics.features import resize_images

    real, fake = np.asarray(real), np.asarray(fake)
    for name, x in (("real", real), ("generated", fake)):
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] != 3 or x.shape[1] != x.shape[2]:
            raise EvaluationError(f"{name} images must be uint8 [n, S, S, 3], got {x.dtype} {list(x.shape)}")
    try:
        return sliced_wasserstein_distance(real, resize_images(fake, real.shape[1], resample), seed=seed)
    except ValueError as e:
        raise EvaluationError(str(e)) from None


def _feature_metrics(real_f, fake_f, tag, metrics, seed) -> dict:
    out = {}
    if "fid" in metrics:
        out[f"fid_{tag}"] = frechet_distance(real_f, fake_f)
    if "kid" in metrics:
        mean, std = kernel_distance(real_f, fake_f, seed=seed)
        out[f"kid_{tag}"], out[f"kid_{tag}_std"] = mean * 1e3, std * 1e3
    if "prdc" in metrics:
        out.update(prdc(real_f, fake_f))
    return out


def memorisation(train: np.ndarray, train_names: list[str], fake: np.ndarray, *,
                 held_out: np.ndarray | None = None, holdout: float = DEFAULT_HOLDOUT, split_seed: int = 0,
                 listing: tuple | None = None,
                 picture_rows: int = NEAREST_ROWS) -> tuple[dict, list[dict], np.ndarray]:
    """``(figures, nearest, picture)``: how close the generated images come to the training photos.

    The held-out photos that set the scale (``metrics.memorisation``) are ``held_out`` when
    given (``--holdout-data``; all of ``train`` is then searched); otherwise the seeded
    ``data.split`` split of ``train`` (``holdout`` of it, seeded by ``split_seed``: a run's
    own ``--holdout`` and ``--seed`` give the very photos it did not train on; ``listing``: the
    folder's, as ``load_all_real_images`` returns it, or None for a run split over its images), and the
    nearest photos are searched among the rest. ``nearest`` lists, per generated image,
    its ``NEIGHBOURS`` nearest training photos (name, distance) in each space; ``picture``
    is ``memorisation.nearest_picture``.
    """
    from nebula_keras3.metrics.memorisation import SPACES, TrainingNeighbours, nearest_picture

    names = list(train_names)
    if held_out is None:
        from nebula_keras3.data.split import holdout_indices

        try:
            kept, out = holdout_indices(len(train), holdout, split_seed, listing=listing)
        except ValueError as e:
            raise EvaluationError(str(e)) from None
        train, held_out, names = train[kept], train[out], [names[i] for i in kept]
        source = f"{len(held_out)} held out of the {len(kept) + len(out)} training images (--holdout {holdout}, seed {split_seed})"
    else:
        source = f"{len(held_out)} held-out images"
    if len(held_out) * COPY_QUANTILE < 1:
        source += (f"; fewer than {round(1 / COPY_QUANTILE)}, so the copy threshold is coarse "
                   "(about their closest one)")
    try:
        neighbours = TrainingNeighbours(train, held_out)
        found = neighbours.score(fake)
    except ValueError as e:
        raise EvaluationError(str(e)) from None
    figures = {**found.figures, **neighbours.facts(), "nn_held_out": source}
    nearest = [
        {"generated": i, **{s: [[names[j], round(float(d), 5)] for j, d in zip(found.indices[s][i], found.distances[s][i])]
                            for s in SPACES}}
        for i in range(len(fake))
    ]
    return figures, nearest, nearest_picture(fake, train, found, rows=picture_rows)


def format_table(result: dict) -> str:
    """The figures as an aligned text table: name, value, meaning."""
    rows = [(k, f"{v:.4f}", _describe(k)) for k, v in result.items()
            if k not in ("n", "image_size") and isinstance(v, float)]
    head = f"{result.get('n', '?')} real vs {result.get('n', '?')} generated images at {result.get('image_size', '?')} px"
    width = max([len(k) for k, _, _ in rows] + [6])
    vwidth = max([len(v) for _, v, _ in rows] + [5])
    lines = [head, f"{'metric':<{width}}  {'value':>{vwidth}}  meaning"]
    lines += [f"{k:<{width}}  {v:>{vwidth}}  {d}" for k, v, d in rows]
    return "\n".join(lines)


# --- loaders ----------------------------------------------------------------------------


def take_subset(images: np.ndarray, n: int, what: str, seed: int | None) -> np.ndarray:
    """``n`` of ``images``: the first n, or a seeded random subset when ``seed`` is given."""
    if len(images) < n:
        raise EvaluationError(f"{what} holds {len(images)} images, fewer than -n {n}")
    if seed is None or len(images) == n:
        return images[:n]
    idx = np.sort(np.random.default_rng(seed).choice(len(images), n, replace=False))
    return images[idx]


def _load_npy(path: Path, what: str) -> np.ndarray:
    try:
        images = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise EvaluationError(f"cannot read {what} {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3 or images.shape[1] != images.shape[2]:
        raise EvaluationError(f"{path} must hold uint8 images [n, S, S, 3], it holds {images.dtype} {list(images.shape)}")
    return images


def _load_folder(path: Path, image_size: int):
    """The folder read as training reads it (``data.folder.load_image_folder``: ``.images``, ``.files``)."""
    from nebula_keras3.data.folder import DataError, load_image_folder

    try:
        return load_image_folder(path, image_size, progress=False)
    except DataError as e:
        raise EvaluationError(str(e)) from None


def folder_pair_size(data) -> int:
    """``--image-size`` when the generated side is a folder and none is given: the size of a
    ``.npy`` real side, else ``DEFAULT_FOLDER_SIZE`` (two folders of photos of any size)."""
    path = Path(data)
    if path.is_file():
        return int(_load_npy(path, "real images").shape[1])
    return DEFAULT_FOLDER_SIZE


def check_image_size(image_size: int, metrics) -> None:
    """A clear error for an ``--image-size`` the metrics cannot use (before any slow work)."""
    if image_size < MIN_IMAGE_SIZE:
        raise EvaluationError(f"--image-size must be at least {MIN_IMAGE_SIZE} px, got {image_size}")
    if "swd" in metrics and image_size & (image_size - 1):
        raise EvaluationError(f"SWD needs a power-of-two --image-size (16, 32, 64, 128, ...), got {image_size}")


def load_generated_images(*, model=None, onnx=None, images=None, n: int = DEFAULT_NUM, seed: int = 0,
                          image_size: int | None = None, checkpoint: str | None = None) -> tuple[np.ndarray, str, dict]:
    """``(uint8 [n, S, S, 3], description, state)`` from exactly one of a model, an ONNX file or images.

    Models render image seeds ``seed .. seed+n-1`` (the ``nebula sample`` recipe) at their
    own size, resized (LANCZOS) to ``image_size`` when one is given; ``checkpoint`` picks a
    run folder's training state (``training.generator_state``), which ``state`` names
    (``{"checkpoint": ..., "epoch": ...}``; empty for images). A folder is read like the
    training data at ``image_size`` (default ``DEFAULT_FOLDER_SIZE``); a ``.npy`` gives its
    first ``n`` images.
    """
    from nebula_keras3.metrics.features import resize_images

    if sum(x is not None for x in (model, onnx, images)) != 1:
        raise EvaluationError("give exactly one of --model RUN_OR_KERAS, --onnx FILE or --images DIR_OR_NPY")
    if checkpoint is not None and model is None:
        raise EvaluationError("--checkpoint picks a training state of a --model run folder")
    if images is not None:
        path = Path(images)
        if path.is_dir():
            size = image_size or DEFAULT_FOLDER_SIZE
            out = take_subset(_load_folder(path, size).images, n, f"generated folder {path}", None)
        elif path.is_file():
            out = take_subset(_load_npy(path, "generated images"), n, f"{path}", None)
            if image_size is not None:
                out = resize_images(out, image_size)
        else:
            raise EvaluationError(f"generated images {path} do not exist")
        return out, f"{n} images from {path} at {out.shape[1]} px", {}
    from nebula_keras3.sampling.onnx_sampler import SamplerError

    state = {}
    try:
        if onnx is not None:
            from nebula_keras3.sampling.onnx_sampler import OnnxSampler

            sampler = OnnxSampler(onnx)
            where = f"{sampler.path}"
        else:
            from nebula_keras3.export import layout
            from nebula_keras3.sampling.keras_sampler import KerasSampler
            from nebula_keras3.training.generator_state import describe_state

            sampler = KerasSampler(model, checkpoint=checkpoint)
            state = {k: sampler.facts.get(k) for k in (layout.CHECKPOINT, layout.EPOCH)}
            where = f"{sampler.path} ({describe_state(sampler.facts)})"
        out = sampler.sample(seed, n)
    except SamplerError as e:
        raise EvaluationError(str(e)) from None
    native = out.shape[1]
    if image_size is not None and image_size != native:
        out = resize_images(out, image_size)
        where += f", {native} px resized to {image_size} px (LANCZOS)"
    return out, f"{n} images from {where} (seeds {seed}..{seed + n - 1})", state


def load_all_real_images(data, image_size: int) -> tuple[np.ndarray, list[str], str, tuple | None]:
    """``(uint8 [N, S, S, 3], names, description, listing)``: every image of a folder (read as
    training reads it: centre crop, LANCZOS resize to ``image_size``; ``listing`` is its
    ``FolderImages.listing``) or ``.npy`` (already that size; ``listing`` None)."""
    path = Path(data)
    listing = None
    if path.is_dir():
        loaded = _load_folder(path, image_size)
        images, names, listing = loaded.images, list(loaded.files), loaded.listing
    elif path.is_file():
        images = _load_npy(path, "real images")
        if images.shape[1] != image_size:
            raise EvaluationError(
                f"the generated images are {image_size} px but {path} holds {images.shape[1]} px images"
            )
        names = [f"{path.name}[{i}]" for i in range(len(images))]
    else:
        raise EvaluationError(f"real images {path} do not exist")
    return images, names, f"{len(images)} images from {path} at {image_size} px", listing
