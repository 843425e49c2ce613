"""DCGAN (Radford et al. 2015) as in pytorch/examples ``dcgan/main.py``, any power-of-two size."""

from nebula_keras3.models.dcgan.discriminator import DCGANDiscriminator
from nebula_keras3.models.dcgan.generator import DCGANGenerator

__all__ = ["DCGANGenerator", "DCGANDiscriminator"]
