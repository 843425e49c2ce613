"""``nebula train --init-from RUN``: start a new run from another run's weights.

Two uses: fine-tuning (a run of the same preset on other photos starts from a trained one: every
weight is copied) and growing a model (ProGAN's idea): nebula64 into nebula128 (the ``grow128``
preset) and that into 256 px (``grow256``); with ``--rgb-skip`` a zero-initialised correction
plays the fade-in's part. Both sizes share the generator's maps from 4 px up (layers named by
resolution: ``up32_conv``...) and the discriminator's stages from the image down where their
widths agree (layers numbered from the image: ``down{i}_...`` or ``block{i}_...``, so one
doubling of the image size shifts ``i`` by one). Every weight whose counterpart in the source has
the same shape is copied (the raw generator, its EMA copy, the discriminator, BatchNorm statistics
and ADA's p); the rest keep their fresh, seeded initialisation, and ``WarmStart.fresh`` names them.
Where this model's discriminator has a coarse stack at the source's size (``--d-coarse-size``),
the source's full-size discriminator becomes that stack whole (``down{i}_`` -> ``coarse{i}_``,
its head -> ``coarse_to_logit_conv``; a coarse stack of the source's own has no place and is left
out) and the full-size stack starts fresh: with ``--rgb-skip`` the grown model starts as the
source, upscaled, judged by the source's own D at the source's size. The optimizers, the latent
seed generator and the step counter start fresh: this is a new run.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from nebula_keras3.artifacts import CONFIG_FILE

_D_STAGE = re.compile(r"^(down|block)(\d+)_")  # discriminator layers, numbered from the image
_COARSE = re.compile(r"^coarse(\d+)_|^coarse_(?=to_logit_conv)")  # a multi-scale D's coarse stack
_CARRIED = ("ada/p",)  # GAN-level state worth keeping (ADA's accumulators restart)


class WarmStartError(ValueError):
    """A source that cannot initialise this model; the message says why."""


@dataclass
class WarmStart:
    source: Path  # the checkpoint file read
    epoch: int  # its epoch
    image_size: int  # its run's image size
    copied: int  # variables copied
    fresh: list[str]  # layers that kept their initialisation (first path component)
    left_out: list[str] = field(default_factory=list)  # source layers with no place here

    def describe(self) -> str:
        fresh = ", ".join(self.fresh) if self.fresh else "none"
        text = (f"initialised from {self.source} (epoch {self.epoch}, {self.image_size} px): "
                f"{self.copied} weights copied; fresh layers: {fresh}")
        return text + (f"; left out of the source: {', '.join(self.left_out)}" if self.left_out else "")


def check_source(source: str | Path, config) -> None:
    """Fail before a run folder is made when ``source`` cannot start a run of ``config``."""
    _, source_config = source_checkpoint(source)
    if source_config.model != config.model:
        raise WarmStartError(f"--init-from {source}: a {source_config.model} run cannot start a "
                             f"{config.model} one (their layers differ)")
    _stage_shift(source, source_config.image_size, config.image_size)
    if config.grows_from and source_config.image_size != config.grows_from:
        raise WarmStartError(f"--init-from {source}: preset {config.preset} grows a {config.grows_from} px "
                             f"run, not a {source_config.image_size} px one")


def held_out_note(source: str | Path, config, skips_files: bool) -> str | None:
    """A warning line when this run holds out photos of the folder its source trained on, but
    split otherwise: its held-out scores may then include photos the source trained on. None
    when the splits agree or the data differ. ``skips_files``: whether this run's image size
    skips files of the folder; a source at a smaller size skipped no more, so where this run
    skips none, a source split over its images (``holdout_split`` "images") held out the same."""
    _, src = source_checkpoint(source)
    if not config.holdout or src.data is None or config.data is None:
        return None
    if Path(src.data).expanduser().resolve() != Path(config.data).expanduser().resolve():
        return None  # fine-tuning on other photos: the source's split says nothing about these
    same_draw = (config.holdout, config.seed) == (src.holdout, src.seed)
    if same_draw and (config.holdout_split == src.holdout_split or not skips_files):
        return None
    return (f"warning: --init-from {source} held out {src.holdout} of {src.data} (seed {src.seed}, split over "
            f"{src.holdout_split}); this run holds out {config.holdout} (seed {config.seed}, over "
            f"{config.holdout_split}), so its held-out photos may include ones the source trained on")


def _stage_shift(source, source_size: int, image_size: int) -> int:
    """How many stages deeper the target's discriminator is (one per doubling); refuses a smaller target."""
    if image_size < source_size:
        raise WarmStartError(f"--init-from {source}: a {source_size} px run cannot start a "
                             f"smaller ({image_size} px) one")
    return int(math.log2(image_size // source_size))


def source_checkpoint(source: str | Path):
    """``(checkpoint file, its run's TrainConfig)`` for a run folder or a checkpoint file in one."""
    from nebula_keras3.training.checkpoint import CHECKPOINT_DIR, checkpoint_path
    from nebula_keras3.training.config import TrainConfig

    path = Path(source)
    if path.is_dir():
        run, path = path, checkpoint_path(path)
        if not path.is_file():
            raise WarmStartError(f"--init-from {source}: the run has no {CHECKPOINT_DIR}/{path.name} yet")
    elif path.is_file() and path.parent.name == CHECKPOINT_DIR:
        run = path.parent.parent
    elif path.is_file():
        raise WarmStartError(f"--init-from {source}: give a run folder or a checkpoint in its {CHECKPOINT_DIR}/ folder")
    else:
        raise WarmStartError(f"--init-from {source} does not exist")
    try:
        config = TrainConfig.load(run / CONFIG_FILE)
    except (OSError, ValueError, TypeError) as e:
        raise WarmStartError(f"--init-from {source}: cannot read {run / CONFIG_FILE}: {e}") from None
    return path, config


def _source_name(path: str, is_discriminator: bool, shift: int, into_coarse: bool) -> str | None:
    """The source's name for target variable ``path``; None: no counterpart."""
    if not is_discriminator:
        return path
    if into_coarse:  # the source's full-size D is the coarse stack; the full-size stack has none
        m = _COARSE.match(path)
        if m is None:
            return None
        return (f"down{m.group(1)}_" if m.group(1) is not None else "") + path[m.end():]
    m = _D_STAGE.match(path)
    if m is None:  # the head (to_logit_conv, logit_dense) sits at the same depth from the output
        return path
    return f"{m.group(1)}{int(m.group(2)) - shift}_{path[m.end():]}"


def warm_start(gan, source: str | Path, image_size: int) -> WarmStart:
    """Copy into ``gan`` (a compiled GAN of ``image_size`` px) every weight ``source`` shares with it."""
    from nebula_keras3.training.checkpoint import CheckpointError, assign_array, read_arrays

    path, source_config = source_checkpoint(source)
    source_size = source_config.image_size
    shift = _stage_shift(source, source_size, image_size)
    try:
        header, arrays = read_arrays(path)
    except CheckpointError as e:
        raise WarmStartError(f"--init-from {source}: {e}") from None
    stored = dict(zip(header["names"], arrays))
    into_coarse = getattr(gan.discriminator, "coarse_size", 0) == source_size

    targets = [(v, False) for v in gan.generator.variables]
    if gan.generator_ema is not None:
        targets += [(v, False) for v in gan.generator_ema.variables]
    targets += [(v, True) for v in gan.discriminator.variables]
    targets += [(v, False) for v in gan.variables if v.path in _CARRIED]
    copied, fresh, generator_copied = 0, [], 0
    generator_ids = {id(v) for v in gan.generator.variables}
    for v, is_d in targets:
        name = _source_name(v.path, is_d, shift, into_coarse)
        a = None if name is None else stored.get(name)
        if a is not None and tuple(a.shape) == tuple(v.shape):
            assign_array(v, a)
            copied += 1
            generator_copied += id(v) in generator_ids
        else:
            layer = v.path.split("/")[-2] if v.path.startswith("generator_ema/") else v.path.split("/")[0]
            if layer not in fresh:
                fresh.append(layer)
    if not generator_copied:
        raise WarmStartError(f"--init-from {source}: no generator weight of it fits this model "
                             "(a different family or width?)")
    # growing into a coarse stack: the source's own coarse stack (if any) judged a smaller image
    left_out = sorted({n.split("/")[0] for n in stored if _COARSE.match(n)}) if into_coarse else []
    return WarmStart(path, int(header["epoch"]), source_size, copied, fresh, left_out)
