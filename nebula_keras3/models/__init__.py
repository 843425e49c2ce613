"""Model families. Each folder holds one family's generator and discriminator."""

from nebula_keras3.models.dcgan import DCGANDiscriminator, DCGANGenerator
from nebula_keras3.models.nebula import NebulaGenerator, ResNetDiscriminator

__all__ = ["DCGANGenerator", "DCGANDiscriminator", "NebulaGenerator", "ResNetDiscriminator"]
