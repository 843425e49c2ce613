"""Model families. Each folder holds one family's generator and discriminator."""

from nebula_keras3.models.dcgan import DCGANDiscriminator, DCGANGenerator

__all__ = ["DCGANGenerator", "DCGANDiscriminator"]
