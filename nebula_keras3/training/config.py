"""Training configuration and presets (presets are plain data). Imports no Keras."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from nebula_keras3.models.options import (  # the models' own options, validated here
    DISCRIMINATORS,
    G_ACTIVATIONS,
    MODELS,
    SUPPORTED_SIZES,
    UPSAMPLE_MODES,
    coarse_sizes,
    num_stages,
)

LOSSES = ("bce", "hinge")
ADA_DEFAULT_POLICY = "color,translation,cutout"  # the ops ADA gates when no DiffAugment policy is set
ADA_KIMG = 500  # adaptive augmentation: thousands of images for p to go from 0 to 1 (StyleGAN2-ADA's)

# The nebula family's recipe: data-efficient GAN training for ~1k images, chosen with
# bench/quality.py against dcgan64 at equal training time (docs/RESULTS.md, "Quality at equal
# training time"). Its D is the DCGAN discriminator (BatchNorm) at ndf 32, cheaper per step than the
# spectral-norm ResNet one, which with hinge loss and cutout scored worse in an earlier run of it.
# EMA 0.99: at 0.999 the average lags the raw weights through the first ~1k steps, most of a
# short run.
_NEBULA = {
    "model": "nebula", "discriminator": "dcgan", "spectral_norm": False, "ngf": 16, "ndf": 32,
    "upsample": "nearest", "g_activation": "glu", "sle": True,
    "loss": "bce", "diffaugment": "color,translation", "ema_decay": 0.99,
    "r1_gamma": 0.0, "r1_every": 16, "beta_1": 0.5, "beta_2": 0.99,
}

_GROW128 = {**_NEBULA, "mixed_precision": "auto", "ada_target": 0.6, "image_size": 128, "ngf": 8, "ndf": 16,
            "rgb_skip": 1, "d_coarse_size": 64, "d_coarse_ndf": _NEBULA["ndf"], "grows_from": 64}

# Each preset only lists what it changes from TrainConfig's defaults.
PRESETS: dict[str, dict] = {
    # pytorch/examples dcgan/main.py at 64 px: latent 100, ngf = ndf = 64, Adam 2e-4 / 0.5, batch 32.
    "dcgan64": {},
    # The default family at 64 and 128 px.
    # "auto": bf16 where it measured faster and no worse (training/precision.py); ADA scored
    # better than the fixed DiffAugment at equal time (docs/RESULTS.md, "ADA against fixed DiffAugment")
    "nebula64": {**_NEBULA, "mixed_precision": "auto", "ada_target": 0.6},
    # 128 and 256 px: nebula64's maps (4..64 px, 256..16 channels) plus 8-channel (16 at 256 px)
    # stages above them, and D one stride-2 stage deeper per doubling at half the width. Without
    # R1 the 128 px D overpowers G and the score gets worse again mid-run (docs/RESULTS.md,
    # "R1 and bilinear upsampling at 128 px"); gamma is StyleGAN2-ADA's 0.0002 * size^2 / batch
    # (0.1 measured at 128 px; 0.4 at 256 px follows the rule, not measured). No ADA: at 128 px it
    # scored worse than the fixed DiffAugment at equal time (docs/RESULTS.md, "ADA at 128 px").
    # Single-scale D: a 32 px coarse stack (--d-coarse-size) fixed the 16 px level but cost the
    # finer ones more (docs/RESULTS.md, "A multi-scale discriminator at 128 px").
    "nebula128": {**_NEBULA, "mixed_precision": "auto", "image_size": 128, "ngf": 8, "ndf": 16,
                  "r1_gamma": 0.1},
    "nebula256": {**_NEBULA, "mixed_precision": "auto", "image_size": 256, "ngf": 8, "ndf": 16,
                  "r1_gamma": 0.4},
    # nebula128 grown from a nebula64 run (--init-from it): its maps and to_rgb_conv draw the image
    # at 64 px, upscaled, and the 128 px stage adds a correction (rgb_skip); nebula64's whole D
    # judges the image pooled to 64 px beside a fresh 128 px one. No R1: nebula64's D was trained
    # without it, and R1 at nebula128's 0.1 flattened it to chance within a few epochs. ADA as in
    # nebula64 (its p carries over): at equal time its finest level beat the run without on two
    # splits; its image downscaled to 64 px scored worse in single draws, level with it averaged
    # over five (docs/RESULTS.md, "Growing with a skip generator and nebula64's D", "The same
    # growth on another split" and "What the finest levels reward").
    "grow128": _GROW128,
    # nebula256 grown from a grow128 run the same way, one level up: grow128's generator (ngf 8 at
    # 128 px is ngf 4 at 256 px) with a 4-channel 256 px stage adding a correction to its upscaled
    # image (rgb_skip 2); grow128's 128 px D as the coarse stack (its own 64 px coarse stack is
    # left out) beside a fresh 256 px one of nebula256's width. Its growth is exact
    # (tests/test_warm_start.py). Grown from short nebula64 and grow128 stages, it reached
    # nebula256's best held-out score sooner than nebula256 did, with better coarse levels and worse
    # fine ones (docs/RESULTS.md, "Growing to 256 px").
    "grow256": {**_GROW128, "image_size": 256, "ngf": _GROW128["ngf"] // 2, "rgb_skip": _GROW128["rgb_skip"] + 1,
                "d_coarse_size": 128, "d_coarse_ndf": _GROW128["ndf"], "grows_from": 128},
    # `make demo`: a short run on the built-in procedural nebulae, sized to stay within 3 minutes
    # of training on the slower (AVX2-only) 2-core build machines too (its time: docs/RESULTS.md,
    # "make demo and make test").
    "demo": {**_NEBULA, "image_size": 32, "epochs": 20, "num_procedural": 1024,
             "batch_size": 32},
    # Tests and smoke runs: seconds per epoch.
    "tiny": {"image_size": 32, "latent_dim": 16, "ngf": 8, "ndf": 8, "epochs": 1, "batch_size": 8,
             "num_procedural": 32, "sample_count": 16},
}


@dataclass
class TrainConfig:
    """Everything a run needs to start or resume; saved as ``config.json`` in the run folder.

    Defaults are the DCGAN reference recipe (preset ``dcgan64``).
    """

    preset: str = "dcgan64"
    model: str = "dcgan"  # generator family: dcgan (transposed convs) | nebula (upsample + conv)
    data: str | None = None  # image folder; None: built-in procedural nebulae
    image_size: int = 64
    latent_dim: int = 100
    ngf: int = 64
    ndf: int = 64
    # nebula generator
    upsample: str = "nearest"  # nearest (UpSampling2D + 3x3 conv) | subpixel (3x3 conv + depth-to-space)
    g_activation: str = "glu"  # glu | lrelu
    sle: bool = True  # FastGAN skip-layer excitation
    rgb_skip: int = 0  # skip-generator levels: draw the image at 1/2^k size, each stage above adds a correction
    # discriminator
    discriminator: str = "dcgan"  # dcgan | resnet
    spectral_norm: bool = False
    d_coarse_size: int = 0  # dcgan D: a second stack judges the image pooled to this side (px); 0 = none
    d_coarse_ndf: int = 64  # that stack's first-stage width, doubling per stage
    # objective and regularisation
    loss: str = "bce"  # bce (non-saturating) | hinge
    diffaugment: str = ""  # DiffAugment policy, e.g. "color,translation,cutout"; "" = off
    r1_gamma: float = 0.0  # R1 penalty weight; 0 = off
    r1_every: int = 16  # lazy R1: every k-th step
    ema_decay: float = 0.0  # EMA of G's weights; 0 = off
    ada_target: float = 0.0  # adaptive augmentation's target for E[sign(D(real))]; 0 = off
    ada_kimg: float = ADA_KIMG  # ADA's speed: p can cross [0, 1] in this many thousand images
    batch_size: int = 32
    epochs: int = 25
    steps_per_epoch: int | None = None  # cap per epoch (quick runs); None: the whole data set
    learning_rate: float = 2e-4
    d_learning_rate: float | None = None  # None: learning_rate (set both for TTUR)
    g_learning_rate: float | None = None
    beta_1: float = 0.5
    beta_2: float = 0.999
    seed: int = 0
    augment: bool = True  # random flips and 90-degree rotations
    num_procedural: int = 1024
    sample_count: int = 64  # images in samples/epoch_NNN.png (fixed latents, seeds 0..n-1)
    jit_compile: str | bool = "auto"
    deterministic: bool = False  # deterministic GPU kernels (training/determinism.py); CPU always is
    holdout: float = 0.0  # fraction of the images kept out of training (seeded split); 0: none
    holdout_split: str = "files"  # what the split draws over (data/split.py, SPLIT_OVER); "images" in runs made before
    eval_every: int = 0  # score against the held-out images every K epochs; 0: never
    mixed_precision: str = "none"  # "bf16" / "fp16" / "auto": see nebula_keras3.training.precision
    init_from: str | None = None  # a run folder or checkpoint whose shared weights start this run (warm_start.py)
    grows_from: int = 0  # this recipe starts from a run of this size (--init-from required); 0: any start
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_preset(cls, preset: str = "dcgan64", **overrides) -> "TrainConfig":
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
        values = {**PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}}
        return cls(preset=preset, **values)

    @property
    def d_lr(self) -> float:
        return self.learning_rate if self.d_learning_rate is None else self.d_learning_rate

    @property
    def g_lr(self) -> float:
        return self.learning_rate if self.g_learning_rate is None else self.g_learning_rate

    def validate(self) -> "TrainConfig":
        from nebula_keras3.training.augment import parse_policy

        for name, allowed in (("model", MODELS), ("discriminator", DISCRIMINATORS), ("upsample", UPSAMPLE_MODES),
                              ("g_activation", G_ACTIVATIONS), ("loss", LOSSES)):
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"unknown {name.replace('_', '-')} {getattr(self, name)!r}; choose one of {', '.join(allowed)}"
                )
        if self.image_size not in SUPPORTED_SIZES:
            raise ValueError(f"image size must be one of {SUPPORTED_SIZES}, got {self.image_size}")
        for name in ("latent_dim", "ngf", "ndf", "batch_size", "epochs", "num_procedural", "sample_count",
                     "r1_every", "d_coarse_ndf"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if self.d_coarse_size:
            if self.discriminator != "dcgan":
                raise ValueError(f"d-coarse-size adds a stack to the dcgan discriminator, not {self.discriminator!r}")
            if self.d_coarse_size not in coarse_sizes(self.image_size):
                sizes = ", ".join(str(s) for s in coarse_sizes(self.image_size))
                raise ValueError(f"d-coarse-size must be one of {sizes} at {self.image_size} px (0 = off), "
                                 f"got {self.d_coarse_size}")
        if self.grows_from and not self.init_from:
            raise ValueError(f"preset {self.preset} grows a {self.grows_from} px run into a {self.image_size} px "
                             f"one: give --init-from RUN, a {self.grows_from} px run of the same family")
        if self.rgb_skip and self.model != "nebula":
            raise ValueError(f"rgb-skip is an option of the nebula generator, not the {self.model} one")
        if not 0 <= self.rgb_skip <= num_stages(self.image_size):
            raise ValueError(f"rgb-skip must be 0..{num_stages(self.image_size)} levels at {self.image_size} px "
                             f"(the image drawn at {self.image_size} / 2^levels px, at least 4), got {self.rgb_skip}")
        if self.steps_per_epoch is not None and self.steps_per_epoch <= 0:
            raise ValueError(f"steps-per-epoch must be positive, got {self.steps_per_epoch}")
        if not 0.0 <= self.holdout < 1.0:
            raise ValueError(f"holdout must be a fraction in [0, 1), got {self.holdout}")
        from nebula_keras3.data.split import SPLIT_OVER

        if self.holdout_split not in SPLIT_OVER:
            raise ValueError(f"holdout-split must be one of {', '.join(SPLIT_OVER)}, got {self.holdout_split!r}")
        if self.eval_every < 0:
            raise ValueError(f"eval-every must be positive, got {self.eval_every}")
        if self.eval_every and not self.holdout:
            raise ValueError("--eval-every scores against held-out images: give --holdout FRACTION too")
        from nebula_keras3.training.precision import CHOICES as PRECISIONS

        if self.mixed_precision not in PRECISIONS:
            raise ValueError(f"mixed precision must be one of {', '.join(PRECISIONS)}, got {self.mixed_precision!r}")
        for name in ("learning_rate", "d_learning_rate", "g_learning_rate"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name.replace('_', '-')} must be positive, got {value}")
        for name in ("beta_1", "beta_2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name.replace('_', '-')} must be in [0, 1), got {getattr(self, name)}")
        if not self.r1_gamma >= 0:
            raise ValueError(f"r1-gamma must be >= 0, got {self.r1_gamma}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema-decay must be in [0, 1) (0 = off), got {self.ema_decay}")
        if not 0.0 <= self.ada_target <= 1.0:
            raise ValueError(f"ada-target must be in [0, 1] (0 = off), got {self.ada_target}")
        if not self.ada_kimg > 0:
            raise ValueError(f"ada-kimg must be positive, got {self.ada_kimg}")
        parse_policy(self.diffaugment)  # names the unknown op
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown config keys: {', '.join(sorted(unknown))}")
        if isinstance(data.get("rgb_skip"), bool):  # written when it was one level at most
            data = {**data, "rgb_skip": int(data["rgb_skip"])}
        if "holdout_split" not in data:  # written before the split drew over the folder's files
            from nebula_keras3.data.split import SPLIT_OF_OLDER_RUNS

            data = {**data, "holdout_split": SPLIT_OF_OLDER_RUNS}
        return cls(**data)

    @classmethod
    def load(cls, path: str | Path) -> "TrainConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))
