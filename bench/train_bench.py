"""Training-step throughput per Keras backend vs a plain-PyTorch DCGAN in the same run.

    .venv/bin/python bench/train_bench.py [--image-size 64] [--batch-size 64] [--steps 10]
                                          [--backends torch,tensorflow,jax] [--rounds 2]
                                          [--presets dcgan64,nebula64]

The reference is pytorch/examples ``dcgan/main.py``'s step (netD on real and fake,
then netG through the updated netD; Adam 2e-4 / 0.5) on the same image size and
batch. Each Keras backend runs ``GAN.fit`` in its own subprocess (the backend is
fixed per process) on random data for ``--steps`` steps after one warm-up epoch
(compile), once per ``--presets`` entry (its recipe: models, loss, DiffAugment,
R1, EMA; image size and batch from the flags). Rounds alternate reference and backends so drift on this noisy machine
hits both; the table prints the median img/s and the ratio to the reference.
Not a test: it measures.
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
import json, sys, time, numpy as np, keras
from nebula_keras3.training.config import TrainConfig
from nebula_keras3.training.trainer import build_gan
size, batch, steps, jit, preset = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
cfg = TrainConfig.from_preset(preset, image_size=size, batch_size=batch,
                              jit_compile={"auto": "auto", "on": True, "off": False}[jit])
gan = build_gan(cfg)
x = np.random.default_rng(0).uniform(-1, 1, (batch * steps, size, size, 3)).astype("float32")
gan.fit(x[: batch * 2], batch_size=batch, epochs=1, verbose=0, shuffle=False)  # compile
t = time.perf_counter()
gan.fit(x, batch_size=batch, epochs=1, verbose=0, shuffle=False)
print(json.dumps({"images_per_second": batch * steps / (time.perf_counter() - t)}))
"""


def torch_reference(size: int, batch: int, steps: int) -> float:
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

    for _ in range(2):
        step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return batch * steps / (time.perf_counter() - t)


def keras_backend(backend: str, size: int, batch: int, steps: int, jit: str, preset: str) -> float:
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run([sys.executable, "-c", WORKER, str(size), str(batch), str(steps), jit, preset],
                         env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{backend} worker failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])["images_per_second"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--backends", default="torch,tensorflow,jax")
    ap.add_argument("--presets", default="dcgan64", help="comma-separated training presets to time")
    ap.add_argument("--tf-jit", choices=["auto", "on", "off"], default="auto",
                    help="jit_compile for the tensorflow backend")
    args = ap.parse_args()
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    runs = [(b, p) for p in presets for b in backends]
    results: dict[str, list[float]] = {"pytorch reference": [], **{f"{p} {b}": [] for b, p in runs}}
    for r in range(args.rounds):
        results["pytorch reference"].append(torch_reference(args.image_size, args.batch_size, args.steps))
        for b, p in runs:
            jit = args.tf_jit if b == "tensorflow" else "auto"
            results[f"{p} {b}"].append(keras_backend(b, args.image_size, args.batch_size, args.steps, jit, p))
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.1f}" for k, v in results.items()), flush=True)
    ref = statistics.median(results["pytorch reference"])
    print(f"\nGAN step at {args.image_size} px, batch {args.batch_size}, {args.steps} steps x {args.rounds} rounds")
    print(f"{'':24s}{'img/s (median)':>16s}{'vs reference':>14s}")
    for k, v in results.items():
        m = statistics.median(v)
        print(f"{k:24s}{m:16.1f}{m / ref:13.2f}x")


if __name__ == "__main__":
    main()
