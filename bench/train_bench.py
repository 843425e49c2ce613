"""Training-step throughput per Keras backend vs a plain-PyTorch reference in the same run.

    .venv/bin/python bench/train_bench.py [--family dcgan64] [--image-size 64] [--batch-size 64]
        [--steps 8] [--rounds 2] [--backends torch,tensorflow,jax]

Each family (``FAMILIES``) names a preset and a plain-PyTorch transcription of its
training step: for ``dcgan64`` pytorch/examples ``dcgan/main.py`` (netD on real and
fake, then netG through the updated netD; Adam 2e-4 / 0.5); for ``nebula64`` the nebula64
preset's step transcribed to plain PyTorch (bench/reference_nebula64.py: same layers,
DiffAugment, EMA). Each Keras backend runs
``GAN.fit`` in its own subprocess (the backend is fixed per process) on random data for
``--steps`` steps after a warm-up fit (compile), with the package's defaults for that
backend, timed from the fit's train start to its train end (the steps; not what fit does
after them, see the worker). A backend entry may carry variants to measure an alternative against the default
in the same run: ``jax:upsample=subpixel`` (DCGAN G: transpose|subpixel|phase),
``jax:nearest=direct`` (nebula G: direct|phase|phase_conv), ``jax:down=direct`` (DCGAN D:
direct|matmul), ``jax:flat_backward=1000`` (the map size from which JAX's phase upsampling
takes the flat backward, ``conv_as_matmul.FLAT_BACKWARD_MIN_SIZE``; 1000: never), ``jax:xla=xla_cpu_use_xnnpack=false`` (XLA flags for that worker, without
``--``, joined by ``+``), ``tensorflow:jit=off``, ``torch:precision=bf16`` (float32|bf16|fp16: the
``--mixed-precision`` policy, to measure 16-bit against float32 in the same run); several join
with commas. ``reference:precision=bf16`` times the reference step itself under
``torch.autocast`` bf16 (the same reference object, so it shares weights and optimizer state).

Rounds alternate the reference and the backends so drift on a shared machine hits both;
each round times the reference and then every entry back to back, and the ratio reported is
the median (and min-max) over rounds of that round's img/s over the reference's, so load that
drifts between rounds cancels. The table also prints each row's own training FLOPs per image
(3x the forward convolution FLOPs of one G and three D passes, counted on the Keras models and,
for the reference, on its torch modules) and the roofline ratio: the achieved FLOP rate divided
by a float32 matmul peak (torch, all cores) measured just before that entry. Not a test: it measures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

WORKER = r"""
import json, sys, time
spec = json.loads(sys.argv[1])
import numpy as np, keras
import nebula_keras3.models.dcgan.layers as dcgan_layers
import nebula_keras3.models.nebula.layers as nebula_layers
from nebula_keras3.training.config import TrainConfig
from nebula_keras3.training.trainer import build_gan
opts = spec["options"]
backend = keras.backend.backend()
if "upsample" in opts:  # another form of the DCGAN generator's transposed convolutions
    dcgan_layers.auto_form = lambda backend, filters: opts["upsample"]
if "nearest" in opts:  # another form of the nebula generator's upsample + conv layers
    nebula_layers.AUTO_FORMS[backend] = opts["nearest"]
if "down" in opts:  # another form of the DCGAN discriminator's stride-2 convolutions
    dcgan_layers.DOWN_AUTO_FORMS[backend] = opts["down"]
if "flat_backward" in opts:  # JAX: the map size from which the phase upsampling takes the flat backward
    import nebula_keras3.models.conv_as_matmul as conv_as_matmul
    conv_as_matmul.FLAT_BACKWARD_MIN_SIZE = int(opts["flat_backward"])
# float32 | bf16 | fp16 | auto (--mixed-precision); float32 unless asked, whatever the preset says
precision = opts.get("precision", "float32")
overrides = {"mixed_precision": "none" if precision == "float32" else precision}
if "jit" in opts:
    overrides["jit_compile"] = {"auto": "auto", "on": True, "off": False}[opts["jit"]]
cfg = TrainConfig.from_preset(spec["preset"], image_size=spec["size"], batch_size=spec["batch"], **overrides)
gan = build_gan(cfg)
batch, steps, size = spec["batch"], spec["steps"], spec["size"]
x = np.random.default_rng(0).uniform(-1, 1, (batch * steps, size, size, 3)).astype("float32")
# Warm up on the very data the timed fit gets: a fit over a dataset of another length makes
# TensorFlow's Keras retrace its train function (~4 s at dcgan64, seen as a slow timed fit).
gan.fit(x, batch_size=batch, epochs=1, verbose=0, shuffle=False)  # compile

class Span(keras.callbacks.Callback):  # the steps, from fit's train start to its train end
    def on_train_begin(self, logs=None):
        self.begin = time.perf_counter()

    def on_train_end(self, logs=None):
        self.end = time.perf_counter()

# Timed from on_train_begin to on_train_end: on TensorFlow, fit's return can wait up to ~4 s
# more for tf.data's autotuning thread as the epoch's iterator is deleted (docs/RESULTS.md,
# "TensorFlow's wait at the end of an epoch"), once per epoch, not per step.
span = Span()
gan.fit(x, batch_size=batch, epochs=1, verbose=0, shuffle=False, callbacks=[span])
ips = batch * steps / (span.end - span.begin)

def conv_flops(model):  # forward multiply-adds x 2 per image, for Conv2D / Conv2DTranspose layers
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2DTranspose):
            h, w, cin = layer.input.shape[1:]
        elif isinstance(layer, keras.layers.Conv2D):
            h, w = layer.output.shape[1:3]
            cin = layer.input.shape[-1]
        else:
            continue
        kh, kw = layer.kernel_size
        total += 2 * h * w * kh * kw * cin * layer.filters
    return total

g, d = conv_flops(gan.generator), conv_flops(gan.discriminator)
# one G pass and three D passes (real, fake, fake for G), each forward + backward ~ 3x forward
print(json.dumps({"images_per_second": ips, "train_flops_per_image": 3 * (g + 3 * d)}))
"""


def dcgan_reference(size: int, batch: int):
    """pytorch/examples dcgan/main.py's networks and step; returns ``step()``."""
    import torch
    from torch import nn

    nz, ngf, ndf = 100, 64, 64
    n = size.bit_length() - 3  # stride-2 stages below the 4x4 map: 64 px -> 4

    g_layers, mult = [], 2 ** (n - 1)
    g_layers += [nn.ConvTranspose2d(nz, ngf * mult, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * mult), nn.ReLU(True)]
    for _ in range(n - 1):
        g_layers += [nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, 4, 2, 1, bias=False),
                     nn.BatchNorm2d(ngf * mult // 2), nn.ReLU(True)]
        mult //= 2
    g_layers += [nn.ConvTranspose2d(ngf, 3, 4, 2, 1, bias=False), nn.Tanh()]
    d_layers, mult = [nn.Conv2d(3, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True)], 1
    for _ in range(n - 1):
        d_layers += [nn.Conv2d(ndf * mult, ndf * mult * 2, 4, 2, 1, bias=False),
                     nn.BatchNorm2d(ndf * mult * 2), nn.LeakyReLU(0.2, inplace=True)]
        mult *= 2
    d_layers += [nn.Conv2d(ndf * mult, 1, 4, 1, 0, bias=False), nn.Sigmoid()]
    netG, netD = nn.Sequential(*g_layers), nn.Sequential(*d_layers)
    optD = torch.optim.Adam(netD.parameters(), lr=2e-4, betas=(0.5, 0.999))
    optG = torch.optim.Adam(netG.parameters(), lr=2e-4, betas=(0.5, 0.999))
    criterion = nn.BCELoss()
    real = torch.rand(batch, 3, size, size) * 2 - 1

    def step():
        netD.zero_grad()
        out = netD(real).view(-1)
        err_real = criterion(out, torch.ones_like(out))
        err_real.backward()
        fake = netG(torch.randn(batch, nz, 1, 1))
        out = netD(fake.detach()).view(-1)
        criterion(out, torch.zeros_like(out)).backward()
        optD.step()
        netG.zero_grad()
        out = netD(fake).view(-1)
        criterion(out, torch.ones_like(out)).backward()
        optG.step()

    step.models, step.z_shape = (netG, netD), (1, nz, 1, 1)
    return step


def nebula_reference(size: int, batch: int):
    """The nebula64 step in plain PyTorch (bench/reference_nebula64.py)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from reference_nebula64 import nebula_reference as make

    step = make(size, batch)
    step.z_shape = (1, step.latent)
    return step


# One entry per model family: the preset the Keras workers train and the PyTorch reference step
# (a transcription of that preset's step, so each ratio is framework parity on one network).
FAMILIES = {
    "dcgan64": {"preset": "dcgan64", "reference": dcgan_reference},
    "nebula64": {"preset": "nebula64", "reference": nebula_reference},
}


def torch_conv_flops(step) -> int:
    """Training FLOPs per image of a reference step, counted as the Keras worker counts them:
    3x (one G pass + three D passes) of the forward conv multiply-adds x 2."""
    import torch
    from torch import nn

    def forward_flops(model, x):
        total = [0]

        def hook(module, inputs, output):
            if isinstance(module, nn.ConvTranspose2d):
                h, w = inputs[0].shape[2:]
            else:
                h, w = output.shape[2:]
            kh, kw = module.kernel_size
            total[0] += 2 * h * w * kh * kw * module.in_channels // module.groups * module.out_channels

        handles = [m.register_forward_hook(hook) for m in model.modules()
                   if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
        with torch.no_grad():
            out = model(x)
        for h in handles:
            h.remove()
        return total[0], out

    g, d = step.models
    g_flops, image = forward_flops(g.eval(), torch.zeros(step.z_shape))
    d_flops, _ = forward_flops(d.eval(), image)
    g.train(), d.train()
    return 3 * (g_flops + 3 * d_flops)


def time_reference(step, batch: int, steps: int, precision: str = "float32") -> float:
    """img/s of the reference step; ``precision="bf16"`` runs it under ``torch.autocast`` (CPU)."""
    import torch

    if precision not in ("float32", "bf16"):
        raise SystemExit(f"reference precision must be float32 or bf16, got {precision!r}")
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        for _ in range(2):
            step()
        t = time.perf_counter()
        for _ in range(steps):
            step()
    return batch * steps / (time.perf_counter() - t)


def matmul_peak_gflops(n: int = 1024, seconds: float = 1.0) -> float:
    """float32 matmul GFLOP/s (torch, all intra-op threads), best of a few timed runs."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best, t_end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t = time.perf_counter()
        for _ in range(4):
            a @ b
        best = max(best, 4 * 2 * n**3 / (time.perf_counter() - t) / 1e9)
    return best


def parse_entry(entry: str) -> tuple[str, dict]:
    """``jax:upsample=subpixel,jit=on`` -> ("jax", {"upsample": "subpixel", "jit": "on"})."""
    backend, _, rest = entry.partition(":")
    options = dict(kv.split("=", 1) for kv in rest.split(",") if kv) if rest else {}
    return backend, options


def keras_worker(entry: str, preset: str, size: int, batch: int, steps: int) -> dict:
    backend, options = parse_entry(entry)
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    if "xla" in options:  # jax:xla=flag_a=1+flag_b=x: extra XLA flags (without "--"), '+' between them
        extra = " ".join(f"--{flag}" for flag in options.pop("xla").split("+"))
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {extra}".strip()
    spec = {"preset": preset, "size": size, "batch": batch, "steps": steps, "options": options}
    out = subprocess.run([sys.executable, "-c", WORKER, json.dumps(spec)], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{entry} worker failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--family", choices=sorted(FAMILIES), default="dcgan64")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--backends", default="torch,tensorflow,jax",
                    help="comma-separated; ';' separates entries with variants, e.g. 'jax;jax:upsample=subpixel'")
    args = ap.parse_args()
    family = FAMILIES[args.family]
    sep = ";" if ";" in args.backends else ","
    entries = [b.strip() for b in args.backends.split(sep) if b.strip()]
    ref_name = "pytorch reference"
    ips: dict[str, list[float]] = {ref_name: [], **{e: [] for e in entries}}
    reference = family["reference"](args.image_size, args.batch_size)
    flops: dict[str, int] = {ref_name: torch_conv_flops(reference)}
    peaks: dict[str, list[float]] = {k: [] for k in ips}  # measured just before each entry
    for r in range(args.rounds):
        peaks[ref_name].append(matmul_peak_gflops())
        ips[ref_name].append(time_reference(reference, args.batch_size, args.steps))
        for e in entries:
            peaks[e].append(matmul_peak_gflops())
            backend, options = parse_entry(e)
            if backend == "reference":  # the reference itself in another precision
                ips[e].append(time_reference(reference, args.batch_size, args.steps,
                                             options.get("precision", "float32")))
                flops[e] = flops[ref_name]
                continue
            res = keras_worker(e, family["preset"], args.image_size, args.batch_size, args.steps)
            ips[e].append(res["images_per_second"])
            flops[e] = res["train_flops_per_image"]
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.1f} (peak {peaks[k][-1]:.0f})" for k, v in ips.items()),
              flush=True)
    print(f"\n{args.family} ({args.image_size} px) GAN step, batch {args.batch_size}, "
          f"{args.steps} steps x {args.rounds} paired rounds; ratios: median (min-max) of each round's "
          f"img/s over the reference's in that round")
    print(f"{'':36s}{'img/s':>9s}{'vs reference':>14s}{'(min-max)':>14s}{'train GFLOP/img':>17s}"
          f"{'matmul GFLOP/s':>16s}{'of peak':>9s}")
    for k, v in ips.items():
        ratios = [x / r for x, r in zip(v, ips[ref_name])]
        roof = statistics.median(x * flops[k] / 1e9 / p for x, p in zip(v, peaks[k]))
        print(f"{k:36s}{statistics.median(v):9.1f}{statistics.median(ratios):13.2f}x"
              f"{min(ratios):>8.2f}-{max(ratios):.2f}x{flops[k] / 1e9:17.2f}"
              f"{statistics.median(peaks[k]):16.0f}{roof:9.0%}")


if __name__ == "__main__":
    main()
