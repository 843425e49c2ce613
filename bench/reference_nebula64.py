"""The nebula64 training step in plain PyTorch: bench/train_bench.py's reference for ``--family nebula64``.

A transcription of what ``nebula train --preset nebula64`` runs per step, written the way a
PyTorch user would (NCHW, ``nn.Upsample`` + ``nn.Conv2d``, eager), so a Keras backend's ratio
to it is framework parity on the same network and step:

* G (``models/nebula/generator.py``, 64 px, ngf 16, GLU, skip-layer excitation): Linear (no
  bias) to 4x4x512 -> BN -> GLU; four times nearest x2 + conv 3x3 (no bias) to 2C -> BN -> GLU
  (C = 128, 64, 32, 16); SLE gates from the 4x4 map on the 32 and 64 px maps (conv 4x4 valid ->
  LeakyReLU 0.1 -> conv 1x1 -> sigmoid, times the map); conv 3x3 to RGB -> tanh.
* D (``models/dcgan/discriminator.py``, ndf 32, no spectral norm): conv 4x4/2 -> LeakyReLU 0.2,
  then three conv 4x4/2 -> BN -> LeakyReLU 0.2, conv 4x4 valid -> logit.
* Step (``training/gan.py`` + ``steps/torch.py``): non-saturating BCE on logits; DiffAugment
  ``color,translation`` (mit-han-lab's ``DiffAugment_pytorch.py``) drawn separately for the
  reals and fakes of the D update and the fakes of the G update; D update, then G through the
  updated D; Adam 2e-4, betas (0.5, 0.99), eps 1e-8; EMA of G's parameters and BatchNorm
  buffers with decay ``min(0.99, (1 + t) / (10 + t))``. BatchNorm as torch's (eps 1e-5,
  momentum 0.1), which is what the Keras layers are configured to match.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LATENT, NGF, NDF, EMA_DECAY = 100, 16, 32, 0.99


class GLU(nn.Module):
    def forward(self, x):
        a, b = x.chunk(2, dim=1)
        return a * torch.sigmoid(b)


class SLE(nn.Module):
    """Skip-layer excitation: channel gates for the high-res map from the 4x4 map."""

    def __init__(self, c_low: int, c_high: int):
        super().__init__()
        self.conv4 = nn.Conv2d(c_low, c_high, 4)
        self.conv1 = nn.Conv2d(c_high, c_high, 1)

    def forward(self, low, high):
        gate = torch.sigmoid(self.conv1(F.leaky_relu(self.conv4(low), 0.1)))  # [B, C_h, 1, 1]
        return high * gate


class Generator(nn.Module):
    def __init__(self, size: int = 64):
        super().__init__()
        n = size.bit_length() - 3  # x2 stages above 4x4
        widths = [NGF * min(2 ** (n - i), 16) for i in range(n + 1)]  # 64 px: [256, 128, 64, 32, 16]
        self.w0 = widths[0]
        self.stem = nn.Linear(LATENT, 4 * 4 * widths[0] * 2, bias=False)
        self.stem_bn = nn.BatchNorm2d(widths[0] * 2)
        self.ups = nn.ModuleList(
            nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                          nn.Conv2d(c_in, 2 * c, 3, padding=1, bias=False), nn.BatchNorm2d(2 * c), GLU())
            for c_in, c in zip(widths[:-1], widths[1:])
        )
        self.res = [4 * 2 ** (i + 1) for i in range(n)]
        self.sle = nn.ModuleDict({str(r): SLE(widths[0], widths[i + 1])
                                  for i, r in enumerate(self.res) if r in (32, 64, 128, 256)})
        self.to_rgb = nn.Conv2d(widths[-1], 3, 3, padding=1)

    def forward(self, z):
        x = GLU()(self.stem_bn(self.stem(z).view(z.shape[0], 2 * self.w0, 4, 4)))
        low = x
        for r, up in zip(self.res, self.ups):
            x = up(x)
            if str(r) in self.sle:
                x = self.sle[str(r)](low, x)
        return torch.tanh(self.to_rgb(x))


def discriminator(size: int = 64) -> nn.Sequential:
    n = size.bit_length() - 3
    layers, c = [nn.Conv2d(3, NDF, 4, 2, 1, bias=False), nn.LeakyReLU(0.2)], NDF
    for _ in range(n - 1):
        layers += [nn.Conv2d(c, 2 * c, 4, 2, 1, bias=False), nn.BatchNorm2d(2 * c), nn.LeakyReLU(0.2)]
        c *= 2
    layers += [nn.Conv2d(c, 1, 4, 1, 0, bias=False), nn.Flatten()]
    return nn.Sequential(*layers)


# DiffAugment_pytorch.py (Zhao et al. 2020), policy "color,translation".
def rand_brightness(x):
    return x + (torch.rand(x.size(0), 1, 1, 1, dtype=x.dtype) - 0.5)


def rand_saturation(x):
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * (torch.rand(x.size(0), 1, 1, 1, dtype=x.dtype) * 2) + mean


def rand_contrast(x):
    mean = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - mean) * (torch.rand(x.size(0), 1, 1, 1, dtype=x.dtype) + 0.5) + mean


def rand_translation(x, ratio=0.125):
    shift_x, shift_y = int(x.size(2) * ratio + 0.5), int(x.size(3) * ratio + 0.5)
    translation_x = torch.randint(-shift_x, shift_x + 1, size=[x.size(0), 1, 1])
    translation_y = torch.randint(-shift_y, shift_y + 1, size=[x.size(0), 1, 1])
    grid_batch, grid_x, grid_y = torch.meshgrid(
        torch.arange(x.size(0), dtype=torch.long),
        torch.arange(x.size(2), dtype=torch.long),
        torch.arange(x.size(3), dtype=torch.long),
        indexing="ij",
    )
    grid_x = torch.clamp(grid_x + translation_x + 1, 0, x.size(2) + 1)
    grid_y = torch.clamp(grid_y + translation_y + 1, 0, x.size(3) + 1)
    x_pad = F.pad(x, [1, 1, 1, 1, 0, 0, 0, 0])
    return x_pad.permute(0, 2, 3, 1).contiguous()[grid_batch, grid_x, grid_y].permute(0, 3, 1, 2)


def diff_augment(x):
    return rand_translation(rand_contrast(rand_saturation(rand_brightness(x))))


def nebula_reference(size: int, batch: int):
    """``step()`` of the nebula64 recipe at ``size`` px (random reals), and its models on ``.models``."""
    netG, netD = Generator(size), discriminator(size)
    ema = Generator(size).requires_grad_(False)
    ema.load_state_dict(netG.state_dict())
    optD = torch.optim.Adam(netD.parameters(), lr=2e-4, betas=(0.5, 0.99), eps=1e-8)
    optG = torch.optim.Adam(netG.parameters(), lr=2e-4, betas=(0.5, 0.99), eps=1e-8)
    bce = nn.BCEWithLogitsLoss()
    real = torch.rand(batch, 3, size, size) * 2 - 1
    t = [0]

    def step():
        fake = netG(torch.randn(batch, LATENT))
        optD.zero_grad()
        real_logits = netD(diff_augment(real))
        fake_logits = netD(diff_augment(fake.detach()))
        d_loss = bce(real_logits, torch.ones_like(real_logits)) + bce(fake_logits, torch.zeros_like(fake_logits))
        d_loss.backward()
        optD.step()
        optG.zero_grad()
        gen_logits = netD(diff_augment(fake))
        bce(gen_logits, torch.ones_like(gen_logits)).backward()
        optG.step()
        with torch.no_grad():
            decay = min(EMA_DECAY, (1 + t[0]) / (10 + t[0]))
            for e, v in zip(ema.state_dict().values(), netG.state_dict().values()):
                if e.dtype.is_floating_point:
                    e.mul_(decay).add_(v, alpha=1 - decay)
                else:
                    e.copy_(v)
        t[0] += 1

    step.models = (netG, netD)
    step.latent = LATENT
    return step
