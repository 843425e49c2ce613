"""Model families. Each folder holds one family's generator and discriminator.

``options`` (sizes, families, modes; no Keras) is what the training config validates
against; ``common`` holds the Keras pieces both families share. Importing this package
imports no Keras: the four model classes load on first use
(``from nebula_keras3.models import DCGANGenerator``), which imports both families and so
registers every serializable class a saved model may name. Code that only loads a saved
model imports ``nebula_keras3.models.dcgan`` and ``nebula_keras3.models.nebula`` first.
"""

_CLASSES = ("DCGANGenerator", "DCGANDiscriminator", "NebulaGenerator", "ResNetDiscriminator")

__all__ = list(_CLASSES)


def __getattr__(name: str):
    if name in _CLASSES:
        from nebula_keras3.models import dcgan, nebula

        return getattr(dcgan if name.startswith("DCGAN") else nebula, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
