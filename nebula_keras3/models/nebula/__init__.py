"""The nebula family: a data-efficient GAN for ~1k images on a CPU (see generator/discriminator)."""

from nebula_keras3.models.nebula.discriminator import ResNetDiscriminator
from nebula_keras3.models.nebula.generator import NebulaGenerator

__all__ = ["NebulaGenerator", "ResNetDiscriminator"]
