"""Growing (``grow_from`` / ``grow_kimg``): a run that first trains a smaller preset, then starts from it.

ProGAN's idea without the fade-in. A preset such as nebula128 names a smaller one of its family
(``grow_from: nebula64``) and how long that trains, in thousands of images shown
(``grow_kimg``; independent of the data set's size, as StyleGAN counts its schedules). The
run then trains in two phases, each a run folder of its own with the usual files and resume
contract:

1. ``RUN/grow_<preset>/``: the smaller preset, on the same data, held-out split, seed, batch
   size and latent size, for ``ceil(grow_kimg * 1000 / training images)`` epochs;
2. ``RUN/`` itself: this preset, started from phase 1's last checkpoint by
   ``warm_start`` (``--init-from``): every layer the two share is copied.

Phase 1 gives the coarse maps the smaller model's step rate; phase 2 spends the rest on full
size. ``nebula train --resume RUN`` finishes phase 1 first when it was interrupted there.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

STAGE_PREFIX = "grow_"  # RUN/grow_<preset>/: phase 1's run folder

# What phase 1 takes from the run's own config (the rest is its preset's).
INHERITED = ("data", "num_procedural", "seed", "holdout", "eval_every", "batch_size", "augment",
             "steps_per_epoch", "sample_count", "jit_compile", "deterministic", "latent_dim",
             "mixed_precision")


def stage_dir(run_dir: str | Path, config) -> Path:
    return Path(run_dir) / f"{STAGE_PREFIX}{config.grow_from}"


def stage_epochs(grow_kimg: float, train_images: int) -> int:
    """Epochs of phase 1: enough to show ``grow_kimg`` thousand images (at least one)."""
    return max(1, math.ceil(grow_kimg * 1000 / train_images))


def stage_config(config, train_images: int):
    """Phase 1's TrainConfig: the ``grow_from`` preset with the run's data, split and sizes."""
    from nebula_keras3.training.config import TrainConfig

    stage = TrainConfig.from_preset(config.grow_from, **{k: getattr(config, k) for k in INHERITED})
    return dataclasses.replace(stage, epochs=stage_epochs(config.grow_kimg, train_images))


def check_growth(config) -> None:
    """A ``grow_from`` preset that can start this config: same family, a smaller size."""
    from nebula_keras3.training.config import PRESETS, TrainConfig

    if config.grow_from not in PRESETS:
        raise ValueError(f"grow-from must be a preset ({', '.join(PRESETS)}), got {config.grow_from!r}")
    if not config.grow_kimg > 0:
        raise ValueError(f"grow-kimg must be positive with grow-from, got {config.grow_kimg}")
    if config.init_from:
        raise ValueError("give --init-from or --grow-from, not both: both say what the run starts from")
    small = TrainConfig.from_preset(config.grow_from)
    if small.model != config.model or small.image_size >= config.image_size:
        raise ValueError(f"grow-from {config.grow_from} ({small.model}, {small.image_size} px) cannot grow into "
                         f"a {config.model} run of {config.image_size} px: it needs the same family at a smaller size")


def run_stage(config, run_dir: Path, train_images: int, *, progress: bool, echo,
              allow_data_change: bool = False) -> Path:
    """Train phase 1 (or finish it after an interruption); return its run folder."""
    from nebula_keras3.artifacts import CONFIG_FILE
    from nebula_keras3.training import trainer

    folder = stage_dir(run_dir, config)
    stage = stage_config(config, train_images)
    echo(f"growing: phase 1 trains {config.grow_from} for {stage.epochs} epochs "
         f"({config.grow_kimg:g} kimg) in {folder}")
    if (folder / CONFIG_FILE).is_file():
        trainer.resume(folder, epochs=stage.epochs, allow_data_change=allow_data_change, progress=progress,
                       echo=echo)
    else:
        trainer.train(stage, folder, progress=progress, echo=echo)
    echo(f"growing: phase 2 trains {config.preset} from {folder}")
    return folder
