"""A growth chain on a real folder: each stage trains a preset from the stage before it
(``nebula train --init-from``), stopped once its own training time passes its budget.

    python bench/grow_chain.py --data ../shared/data/nebula --out runs/chain \
        --stage nebula64:20:4 --stage grow128:20:2 --stage grow256:50:1

A stage is ``PRESET:MINUTES[:EVAL_EVERY]``: the preset, its budget in minutes of training time
(the sum of ``epochs.csv`` seconds, evaluation excluded) and how often it scores SWD against the
held-out photos (default 2 epochs). Every stage uses the same seeded ``--holdout`` split, so the
curve runs on across stages. A stage whose folder holds ``done`` is skipped (re-run the command
to continue a chain that was stopped between stages). A stage is stopped with SIGTERM, on which
``nebula train`` finishes the epoch in flight and its checkpoint; the next stage starts from it.
Prints each stage's scores against the chain's cumulative training time and plots them
(``swd_vs_time.png`` in ``--out``; each stage at its own size); ``bench/quality.py --run DIR ...`` then scores the stages' last states per
pyramid level at full size.

The runs use the environment's ``KERAS_BACKEND`` and thread settings.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from quality import curve, plot, read_epochs


def parse_stage(text: str) -> tuple[str, float, int]:
    parts = text.split(":")
    if len(parts) not in (2, 3) or not parts[0]:
        raise argparse.ArgumentTypeError(f"a stage is PRESET:MINUTES[:EVAL_EVERY], got {text!r}")
    try:
        minutes, every = float(parts[1]), int(parts[2]) if len(parts) == 3 else 2
    except ValueError:
        raise argparse.ArgumentTypeError(f"a stage is PRESET:MINUTES[:EVAL_EVERY], got {text!r}") from None
    return parts[0], minutes, every


def train_stage(preset, minutes, every, prev, args) -> Path:
    run = args.out / preset
    cmd = [sys.executable, "-m", "nebula_keras3", "train", "--preset", preset, "--data", str(args.data),
           "--holdout", str(args.holdout), "--eval-every", str(every), "--epochs", "100000",
           "--seed", str(args.seed), "--out", str(run), "--quiet"] + (["--init-from", str(prev)] if prev else [])
    print("$", " ".join(cmd), flush=True)
    t0 = time.time()
    with open(args.out / f"{preset}.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        while proc.poll() is None:
            time.sleep(10)
            points = curve(read_epochs(run), "seconds")
            if points and points[-1][1] >= minutes * 60:
                os.killpg(proc.pid, signal.SIGTERM)  # nebula train stops after this epoch's checkpoint
                proc.wait()
    points = curve(read_epochs(run), "seconds")
    if not points:
        sys.exit(f"{preset} trained no epoch; see {args.out / preset}.log")
    print(f"{preset}: {points[-1][0]} epochs, {points[-1][1]:.0f} s training, {time.time() - t0:.0f} s wall", flush=True)
    (run / "done").touch()
    return run


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, type=Path, help="real image folder")
    p.add_argument("--out", default=Path("runs/chain"), type=Path)
    p.add_argument("--stage", action="append", type=parse_stage, required=True, metavar="PRESET:MINUTES[:EVAL_EVERY]")
    p.add_argument("--holdout", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--metric", default="swd")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    prev, runs = None, []
    for preset, minutes, every in args.stage:
        run = args.out / preset
        prev = run if (run / "done").exists() else train_stage(preset, minutes, every, prev, args)
        runs.append(prev)
    print(f"\n{args.metric} x1e3 against the held-out photos, by the chain's training time:")
    print(f"{'stage':<12} {'epoch':>6} {'minutes':>8} {args.metric:>8}")
    offset, curves = 0.0, {}
    for run in runs:
        curves[run.name] = points = curve(read_epochs(run), args.metric, start=offset)
        for epoch, seconds, value in points:
            if value is not None:
                print(f"{run.name:<12} {epoch:>6} {seconds / 60:>8.1f} {value:>8.1f}")
        offset = points[-1][1]
    plot(curves, args, None, args.out / f"{args.metric}_vs_time.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
