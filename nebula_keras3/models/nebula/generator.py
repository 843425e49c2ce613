"""Nebula generator: latent vector -> RGB image in [-1, 1], no transposed convolutions."""

from __future__ import annotations

import keras

from nebula_keras3.export import layout  # exported tensor names: G maps Z to IMAGES
from nebula_keras3.models.common import BatchNorm, Conv2D, seeded
from nebula_keras3.models.nebula.layers import GLU, ICNR, DepthToSpace, NearestUpsampleConv2D
from nebula_keras3.models.options import G_ACTIVATIONS, UPSAMPLE_MODES, num_stages

MAX_WIDTH_MULT = 32  # widest map: ngf * 32 (the 4x4 one at 128 px, and 4x4 + 8x8 at 256 px) ...
MIN_MAX_WIDTH = 256  # ... but never capped below 256 channels (it binds only at 256 px, for ngf < 8)


def generator_widths(image_size: int, ngf: int) -> list[int]:
    """Channels of the 4x4, 8x8, ..., image_size maps: ngf at full size, doubling per halving.

    64 px, ngf 16: [256, 128, 64, 32, 16]; 128 px, ngf 8: [256, 128, 64, 32, 16, 8] (the
    64 px maps of nebula64 plus an 8-channel 128 px stage); 256 px, ngf 8: [256, 256, 128, ..., 8];
    256 px, ngf 4: [256, 128, ..., 8, 4] (the 128 px maps of ngf 8 plus a 4-channel 256 px stage).
    """
    n = num_stages(image_size)
    widest = max(ngf * MAX_WIDTH_MULT, MIN_MAX_WIDTH)
    return [min(ngf * 2 ** (n - i), widest) for i in range(n + 1)]


def sle_pairs(image_size: int) -> list[tuple[int, int]]:
    """(low, high) resolutions of FastGAN's skip-layer excitations: low = max(4, high / 16).

    64 px: [(4, 32), (4, 64)]; 256 px: FastGAN's (4, 64), (8, 128), (16, 256) plus (4, 32).
    """
    return [(max(4, r // 16), r) for r in (32, 64, 128, 256) if r <= image_size]


def skip_layer_excitation(low, high, name, seed):
    """FastGAN SLE: channel gates for ``high`` [B, R, R, C_h] from ``low`` [B, r, r, C_l].

    pool to 4x4 -> conv 4x4 valid (C_h) [B, 1, 1, C_h] -> LeakyReLU 0.1 -> conv 1x1 -> sigmoid -> high * gate.
    """
    r = low.shape[1]
    x = low if r == 4 else keras.layers.AveragePooling2D(r // 4, name=f"{name}_pool")(low)  # [B, 4, 4, C_l]
    c = high.shape[-1]
    x = Conv2D(c, 4, padding="valid", kernel_initializer=keras.initializers.GlorotUniform(seeded(seed, 0)),
               name=f"{name}_conv4")(x)  # [B, 1, 1, C_h]
    x = keras.layers.LeakyReLU(0.1, name=f"{name}_lrelu")(x)
    x = Conv2D(c, 1, activation="sigmoid",
               kernel_initializer=keras.initializers.GlorotUniform(seeded(seed, 1)),
               name=f"{name}_conv1")(x)  # [B, 1, 1, C_h] in (0, 1)
    return keras.layers.Multiply(name=f"{name}_gate")([high, x])


@keras.saving.register_keras_serializable(package="nebula_keras3")
class NebulaGenerator(keras.Model):
    """Upsample-and-convolve generator (FastGAN-like, sized for a 2-core CPU).

    Shapes at 64 px, ngf=16 (channels last; k = 2 with GLU, 1 with LeakyReLU):
        z [B, 100]
        Dense + BN + act                 -> [B, 4, 4, 256]      (Dense to 4*4*256k, reshape)
        x2 up, conv 3x3, BN, act         -> [B, 8, 8, 128]
                                         -> [B, 16, 16, 64]
                                         -> [B, 32, 32, 32]   * SLE gate from the 4x4 map
                                         -> [B, 64, 64, 16]   * SLE gate from the 4x4 map
        conv 3x3 + tanh                  -> [B, 64, 64, 3]      (float32)
    With ``rgb_skip`` = k the image is drawn at 1/2^k of the size and each of the k stages above
    adds a correction (StyleGAN2's skip generator over the top k levels): at 128 px, ngf=8, k=1,
        to_rgb_conv on the 64 px map     -> [B, 64, 64, 3]      (nebula64's image, before tanh)
        bilinear x2                      -> [B, 128, 128, 3]
        + to_rgb128_conv on the 128 px map (zero-initialised: a correction)
        tanh                             -> [B, 128, 128, 3]
    and at 256 px, ngf=4, k=2, the same 128 px sum (before tanh), bilinear x2, + to_rgb256_conv
    on the 256 px map. So the layers below the top stage are those of the model half the size
    with k - 1 levels, and a run of that model, copied in (``--init-from``), starts this one at
    the bilinear upscale of its own images instead of at noise (ProGAN's growing, where the
    fade-in is the learnt correction).
    "x2 up" is ``upsample="nearest"`` (nearest x2 upsampling then a 3x3 conv at the new size,
    one ``NearestUpsampleConv2D``, computed in the backend's faster exact form) or
    ``"subpixel"`` (a 3x3 conv to 4x the channels at the old size, ICNR-initialised, then
    depth-to-space): the same shapes, the sub-pixel form at a quarter of the pixels; or
    ``"bilinear"`` (bilinear x2 resize, half-pixel centres, then a 3x3 conv: smooth from the
    first step, where nearest starts as 2x2 blocks; plain Keras layers, so XLA's own
    convolution on JAX, slower there than the nearest form's matmuls).

    Args:
        image_size: 32, 64, 128 or 256.
        latent_dim: length of z.
        ngf: channels of the full-size map (doubling per halving, up to ngf * MAX_WIDTH_MULT).
        upsample: "nearest", "subpixel" or "bilinear".
        activation: "glu" (FastGAN: convs give 2C channels, gated to C) or "lrelu" (LeakyReLU 0.2).
        sle: add FastGAN skip-layer excitation (low-res maps gate high-res channels).
        rgb_skip: levels of the skip generator: 0 draws the image from the full-size map only; k
            draws it at 1/2^k of the size, and each stage above adds a correction to its x2 upscale.
        seed: seed for the weight initialisers (None: Keras' global RNG).
    """

    def __init__(self, image_size=64, latent_dim=100, ngf=16, upsample="nearest", activation="glu",
                 sle=True, rgb_skip=0, seed=None, **kwargs):
        if upsample not in UPSAMPLE_MODES:
            raise ValueError(f"upsample must be one of {UPSAMPLE_MODES}, got {upsample!r}")
        if activation not in G_ACTIVATIONS:
            raise ValueError(f"activation must be one of {G_ACTIVATIONS}, got {activation!r}")
        widths = generator_widths(image_size, ngf)
        k = 2 if activation == "glu" else 1

        def init(i):
            return keras.initializers.GlorotUniform(seeded(seed, i))

        def bn_act(x, name):
            x = BatchNorm(momentum=0.9, epsilon=1e-5, name=f"{name}_bn")(x)
            if activation == "glu":
                return GLU(name=f"{name}_glu")(x)  # [.., 2C] -> [.., C]
            return keras.layers.LeakyReLU(0.2, name=f"{name}_lrelu")(x)

        z = keras.Input(shape=(latent_dim,), name=layout.Z)
        x = keras.layers.Dense(4 * 4 * widths[0] * k, use_bias=False, kernel_initializer=init(0),
                               name="stem_dense")(z)
        x = keras.layers.Reshape((4, 4, widths[0] * k), name="stem_map")(x)
        x = bn_act(x, "stem")  # [B, 4, 4, widths[0]]
        maps = {4: x}
        gates = dict((high, low) for low, high in sle_pairs(image_size)) if sle else {}
        for i, c in enumerate(widths[1:], start=1):
            res = 4 * 2**i
            name = f"up{res}"
            if upsample == "nearest":
                x = NearestUpsampleConv2D(c * k, use_bias=False, kernel_initializer=init(i),
                                          name=f"{name}_conv")(x)  # [B, res, res, kC]
            elif upsample == "bilinear":
                x = keras.layers.UpSampling2D(2, interpolation="bilinear", name=f"{name}_resize")(x)
                x = Conv2D(c * k, 3, padding="same", use_bias=False, kernel_initializer=init(i),
                           name=f"{name}_conv")(x)  # [B, res, res, kC]
            else:
                x = Conv2D(4 * c * k, 3, padding="same", use_bias=False,
                           kernel_initializer=ICNR(init(i)),
                           name=f"{name}_conv")(x)  # [B, res/2, res/2, 4kC]
                x = DepthToSpace(2, name=f"{name}_shuffle")(x)  # [B, res, res, kC]
            x = bn_act(x, name)  # [B, res, res, C]
            if res in gates:
                x = skip_layer_excitation(maps[gates[res]], x, f"sle{gates[res]}to{res}", seeded(seed, 100 + i * 2))
            maps[res] = x
        rgb_skip = int(rgb_skip)  # a bool in configs written when it was one level at most
        if not 0 <= rgb_skip <= num_stages(image_size):
            raise ValueError(f"rgb_skip must be 0..{num_stages(image_size)} levels at {image_size} px, got {rgb_skip}")
        base = image_size // 2**rgb_skip
        rgb = Conv2D(3, 3, padding="same", kernel_initializer=init(99), name="to_rgb_conv")(
            maps[base])  # [B, S/2^k, S/2^k, 3]
        for res in (base * 2**i for i in range(1, rgb_skip + 1)):
            rgb = keras.layers.UpSampling2D(2, interpolation="bilinear", name=f"to_rgb{res}_resize")(rgb)
            correction = Conv2D(3, 3, padding="same", kernel_initializer="zeros",
                                name=f"to_rgb{res}_conv")(maps[res])  # [B, res, res, 3]
            rgb = keras.layers.Add(name=f"to_rgb{res}_add")([rgb, correction])  # [B, res, res, 3]
        images = keras.layers.Activation("tanh", dtype="float32", name=layout.IMAGES)(rgb)  # [B, S, S, 3]
        kwargs.setdefault("name", "generator")
        super().__init__(inputs=z, outputs=images, **kwargs)
        self.image_size = image_size
        self.latent_dim = latent_dim
        self.ngf = ngf
        self.upsample = upsample
        self.activation = activation
        self.sle = sle
        self.rgb_skip = rgb_skip
        self.seed = seed

    def get_config(self):
        return {
            "image_size": self.image_size,
            "latent_dim": self.latent_dim,
            "ngf": self.ngf,
            "upsample": self.upsample,
            "activation": self.activation,
            "sle": self.sle,
            "rgb_skip": self.rgb_skip,
            "seed": self.seed,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
