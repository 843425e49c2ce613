"""Training configuration and presets (presets are plain data)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

# Each preset only lists what it changes from TrainConfig's defaults.
PRESETS: dict[str, dict] = {
    # pytorch/examples dcgan/main.py at 64 px: latent 100, ngf = ndf = 64, Adam 2e-4 / 0.5, batch 32.
    "dcgan64": {},
    # `make demo`: a few minutes on a 2-core CPU on the built-in procedural nebulae.
    "demo": {"image_size": 32, "ngf": 32, "ndf": 32, "epochs": 20, "num_procedural": 1024, "batch_size": 32},
    # Tests and smoke runs: seconds per epoch.
    "tiny": {"image_size": 32, "latent_dim": 16, "ngf": 8, "ndf": 8, "epochs": 1, "batch_size": 8,
             "num_procedural": 32, "sample_count": 16},
}


@dataclass
class TrainConfig:
    """Everything a run needs to start or resume; saved as ``config.json`` in the run folder."""

    preset: str = "dcgan64"
    model: str = "dcgan"
    data: str | None = None  # image folder; None: built-in procedural nebulae
    image_size: int = 64
    latent_dim: int = 100
    ngf: int = 64
    ndf: int = 64
    batch_size: int = 32
    epochs: int = 25
    steps_per_epoch: int | None = None  # cap per epoch (quick runs); None: the whole data set
    learning_rate: float = 2e-4
    beta_1: float = 0.5
    beta_2: float = 0.999
    seed: int = 0
    augment: bool = True  # random flips and 90-degree rotations
    num_procedural: int = 1024
    sample_count: int = 64  # images in samples/epoch_NNN.png (fixed latents, seeds 0..n-1)
    jit_compile: str | bool = "auto"
    deterministic: bool = False  # deterministic GPU kernels (training/determinism.py); CPU always is
    holdout: float = 0.0  # fraction of the images kept out of training (seeded split); 0: none
    eval_every: int = 0  # score against the held-out images every K epochs; 0: never
    mixed_precision: str = "none"  # "bf16" / "fp16": see nebula_keras3.training.precision
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_preset(cls, preset: str = "dcgan64", **overrides) -> "TrainConfig":
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
        values = {**PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}}
        return cls(preset=preset, **values)

    def validate(self) -> "TrainConfig":
        from nebula_keras3.models.dcgan.layers import SUPPORTED_SIZES

        if self.model != "dcgan":
            raise ValueError(f"unknown model {self.model!r}; available: dcgan")
        if self.image_size not in SUPPORTED_SIZES:
            raise ValueError(f"image size must be one of {SUPPORTED_SIZES}, got {self.image_size}")
        for name in ("latent_dim", "ngf", "ndf", "batch_size", "epochs", "num_procedural", "sample_count"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if self.steps_per_epoch is not None and self.steps_per_epoch <= 0:
            raise ValueError(f"steps-per-epoch must be positive, got {self.steps_per_epoch}")
        if not 0.0 <= self.holdout < 1.0:
            raise ValueError(f"holdout must be a fraction in [0, 1), got {self.holdout}")
        if self.eval_every < 0:
            raise ValueError(f"eval-every must be positive, got {self.eval_every}")
        if self.eval_every and not self.holdout:
            raise ValueError("--eval-every scores against held-out images: give --holdout FRACTION too")
        from nebula_keras3.training.precision import POLICIES

        if self.mixed_precision not in POLICIES:
            raise ValueError(f"mixed precision must be one of {', '.join(POLICIES)}, got {self.mixed_precision!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning rate must be positive, got {self.learning_rate}")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown config keys: {', '.join(sorted(unknown))}")
        return cls(**data)

    @classmethod
    def load(cls, path: str | Path) -> "TrainConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))
