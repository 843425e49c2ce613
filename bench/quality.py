"""Quality at equal wall-clock time: a candidate preset vs a reference preset on a real folder.

Both presets train at the same time, side by side, each limited to the same number of
threads, on the same held-out split (``nebula train --holdout``), scoring SWD against the
held-out images every ``--eval-every`` epochs (``epochs.csv``). The reference trains for
``--reference-epochs``; its training time T (sum of ``epochs.csv`` seconds, evaluation
excluded) is the budget, and the candidate is stopped once its own training time passes
T. Running both at once puts them under the same machine load, so the comparison holds on
a busy machine too (absolute times do not: they are printed for the record).

    python bench/quality.py --data ../shared/data/nebula --out runs/quality

prints SWD (x1e3, lower is better) against training time for both, the ratio at T, and
writes ``swd_vs_time.png`` and both presets' grids at T into ``--out``.

``--candidate`` may be repeated, and each may carry ``nebula train`` options after the preset
(``--candidate "nebula64 --ndf 64"``): all candidates train beside the reference, under the
same load, and each is compared at T.

Resolution: once the runs stop, each run's last checkpoint (its state at T) renders
``--resolution-images`` images that are scored against the held-out photos at the largest
image size of the runs, per SWD pyramid level (from that size down to 16 px); a
lower-resolution run's samples are upscaled to that size with LANCZOS first
(``metrics.evaluate.resolution_swd``; ``--upscale lanczos,nearest`` adds rows for other
filters), so its finest levels show what an upscale lacks. The same is done at every smaller
run size, higher-resolution samples downscaled. Each figure is the mean over
``--resolution-draws`` disjoint sets of latents, printed with its min-max. ``result.json``
holds them under ``full_size_swd`` (by image size, then run).

``--budget-minutes M`` fixes T instead: every run, the reference too, trains for M minutes.

Growing (``nebula train --init-from``): a candidate whose options hold ``--init-from @reference``
starts once the reference has trained ``--grow-at-minutes`` M, from a copy of the reference's
checkpoint at that moment (``<reference>_at_<M>min/``): its clock starts at the reference's
training time then, so both phases count against T, and it trains beside the reference for the
rest. ``--candidate "nebula128 --init-from @reference" --grow-at-minutes 30`` is nebula64 for 30
minutes grown into nebula128 for the other 30.

``--run DIR`` (repeatable) trains nothing: it reports run folders that already exist (a long
``nebula train --holdout --eval-every`` run, or runs of an earlier bench), their curves, plot and
full-size SWD as above, with no T.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path


def read_epochs(run_dir: Path) -> list[dict]:
    path = run_dir / "epochs.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


GROW_SOURCE = "@reference"  # in a candidate's options: --init-from the reference's state at --grow-at-minutes


def curve(rows: list[dict], column: str, start: float = 0.0) -> list[tuple[int, float, float | None]]:
    """(epoch, cumulative training seconds from ``start``, metric or None) per epoch."""
    out, total = [], start
    for r in rows:
        total += float(r["seconds"])
        value = r.get(column)
        out.append((int(r["epoch"]), total, float(value) if value not in (None, "") else None))
    return out


def last_scored_within(points, budget):
    scored = [p for p in points if p[2] is not None and p[1] <= budget * 1.0001]
    return scored[-1] if scored else None


def run_name(spec: str) -> str:
    """Folder name of a candidate spec: the preset, then its options (``nebula64 --ndf 64`` -> ``nebula64_ndf_64``)."""
    words = shlex.split(spec)
    return "_".join([words[0]] + [re.sub(r"[^A-Za-z0-9.]+", "", w) for w in words[1:]])


def start(spec, name, args, out: Path, epochs: int) -> subprocess.Popen:
    preset, *options = shlex.split(spec)
    env = dict(os.environ, KERAS_BACKEND=args.backend, OMP_NUM_THREADS=str(args.threads),
               MKL_NUM_THREADS=str(args.threads), TF_NUM_INTRAOP_THREADS=str(args.threads),
               TF_NUM_INTEROP_THREADS="1",
               XLA_FLAGS=os.environ.get("XLA_FLAGS", "") + (" --xla_cpu_multi_thread_eigen=false" if args.threads == 1 else ""))
    cmd = [sys.executable, "-m", "nebula_keras3", "train", "--preset", preset, *options, "--data", args.data,
           "--holdout", str(args.holdout), "--eval-every", str(args.eval_every), "--epochs", str(epochs),
           "--seed", str(args.seed), "--out", str(out / name), "--quiet"]
    log = open(out / f"{name}.log", "w")
    print("$", " ".join(cmd), flush=True)
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def snapshot_reference(ref_dir: Path, out: Path, minutes: float) -> tuple[str, float] | None:
    """Once the reference has trained ``minutes``: a copy of it (config + last checkpoint) to grow
    from, and its training time at that checkpoint; None before then."""
    from nebula_keras3.artifacts import CONFIG_FILE
    from nebula_keras3.training.checkpoint import checkpoint_path, read_header

    points = curve(read_epochs(ref_dir), "seconds")
    source = checkpoint_path(ref_dir)
    if not points or points[-1][1] < minutes * 60 or not source.is_file():
        return None
    copy = out / f"{ref_dir.name}_at_{minutes:g}min"
    target = checkpoint_path(copy)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(ref_dir / CONFIG_FILE, copy / CONFIG_FILE)
    shutil.copy(source, target)  # checkpoints are renamed into place: the copy is one whole file
    epoch = read_header(target)["epoch"]
    seconds = next(t for e, t, _ in points if e == epoch)
    print(f"growing from {ref_dir.name} at epoch {epoch} ({seconds:.0f} s of training): {copy}", flush=True)
    return str(copy), seconds


def stop_at(proc: subprocess.Popen, run_dir: Path, epoch: int) -> None:
    """Stop a run once ``epoch`` (its first past T) is its checkpoint, so that its last state is T's.

    A SIGTERM alone would let it finish the epoch in flight first (``nebula train``'s graceful
    stop): one more epoch, past T, in the state the resolution scores read."""
    from nebula_keras3.training.checkpoint import checkpoint_path, read_header

    path = checkpoint_path(run_dir)
    while proc.poll() is None:
        try:
            if read_header(path)["epoch"] >= epoch:  # renamed into place: a whole file or the previous one
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.5)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="real image folder")
    p.add_argument("--out", default="runs/quality")
    p.add_argument("--reference", default="dcgan64")
    p.add_argument("--candidate", action="append",
                   help="preset, optionally followed by nebula train options; repeatable (default: nebula64)")
    p.add_argument("--reference-epochs", type=int, default=40)
    p.add_argument("--budget-minutes", type=float, default=None,
                   help="fixed training-time budget T for every run, the reference included "
                        "(instead of the reference's time for --reference-epochs)")
    p.add_argument("--holdout", type=float, default=0.1)
    p.add_argument("--eval-every", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="threads per training process")
    p.add_argument("--backend", default="torch")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--metric", default="swd")
    p.add_argument("--resolution-images", type=int, default=256,
                   help="images per run for the full-size SWD at the end (0: skip it)")
    p.add_argument("--resolution-draws", type=int, default=4,
                   help="disjoint sets of latents each full-size SWD figure is averaged over")
    p.add_argument("--upscale", type=lambda v: v.split(","), default=["lanczos"], metavar="FILTERS",
                   help="PIL filters a lower-resolution run's samples are upscaled with for the full-size SWD, "
                        "comma-separated: lanczos, bicubic, bilinear, nearest (default: lanczos)")
    p.add_argument("--grow-at-minutes", type=float, default=None, metavar="M",
                   help="start candidates that hold '--init-from @reference' from the reference's state "
                        "after M minutes of its training")
    p.add_argument("--run", action="append", type=Path, metavar="DIR",
                   help="report this existing run folder instead of training (repeatable)")
    args = p.parse_args(argv)
    if args.resolution_images < 0:
        p.error(f"--resolution-images must be 0 (skip) or positive, got {args.resolution_images}")
    if args.resolution_draws < 1:
        p.error(f"--resolution-draws must be at least 1, got {args.resolution_draws}")
    from nebula_keras3.metrics.features import RESAMPLING

    unknown = [f for f in args.upscale if f not in RESAMPLING]
    if unknown or not args.upscale:
        p.error(f"--upscale: unknown filter {', '.join(unknown) or '(none)'}; choose from {', '.join(RESAMPLING)}")
    if args.budget_minutes is not None and not args.budget_minutes > 0:
        p.error(f"--budget-minutes must be positive, got {args.budget_minutes}")

    os.environ["KERAS_BACKEND"] = args.backend  # before Keras is imported here
    if args.run:
        return report_runs(args)
    candidates = args.candidate or ["nebula64"]
    growing = {run_name(c) for c in candidates if GROW_SOURCE in shlex.split(c)}
    if growing and not (args.grow_at_minutes and args.grow_at_minutes > 0):
        p.error(f"candidates with --init-from {GROW_SOURCE} need a positive --grow-at-minutes")
    names = [run_name(c) for c in candidates]
    ref_name = run_name(args.reference)
    if len({*names, ref_name}) != len(names) + 1:
        raise SystemExit(f"two runs would share a run folder: {[ref_name, *names]}")
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    t0 = time.time()
    fixed_budget = args.budget_minutes is not None
    ref = start(args.reference, ref_name, args, out, 100_000 if fixed_budget else args.reference_epochs)
    cands = {name: start(spec, name, args, out, 100_000) for name, spec in zip(names, candidates)
             if name not in growing}
    pending = {name: spec for name, spec in zip(names, candidates) if name in growing}
    offsets = {}  # a grown candidate's clock starts at the reference's training time when it was copied
    if fixed_budget:  # the reference is one more run stopped at T
        cands = {ref_name: ref, **cands}
    ref_dir = out / ref_name
    budget = args.budget_minutes * 60 if fixed_budget else None
    try:
        while cands or pending:
            time.sleep(5)
            if pending and ref.poll() is None:
                snapshot = snapshot_reference(ref_dir, out, args.grow_at_minutes)
                if snapshot is not None:
                    source, offsets_at = snapshot
                    for name, spec in pending.items():
                        offsets[name] = offsets_at
                        grown = shlex.join([source if w == GROW_SOURCE else w for w in shlex.split(spec)])
                        cands[name] = start(grown, name, args, out, 100_000)
                    pending = {}
            elif pending:
                raise SystemExit(f"{args.reference} stopped before {args.grow_at_minutes} minutes of training; "
                                 f"see {ref_dir}.log")
            if budget is None and ref.poll() is not None:
                if ref.returncode != 0:
                    raise SystemExit(f"{args.reference} failed (exit {ref.returncode}); see {ref_dir}.log")
                budget = curve(read_epochs(ref_dir), args.metric)[-1][1]
                print(f"{args.reference}: {args.reference_epochs} epochs in {budget:.0f} s of training "
                      f"({time.time() - t0:.0f} s wall)", flush=True)
            for name, proc in list(cands.items()):
                if proc.poll() is not None:
                    raise SystemExit(f"{name} stopped early (exit {proc.returncode}); see {out / name}.log")
                if budget is not None:
                    points = curve(read_epochs(out / name), args.metric, offsets.get(name, 0.0))
                    if points and points[-1][1] >= budget:
                        stop_at(proc, out / name, points[-1][0])  # past T: the others run on without it
                        del cands[name]
    finally:
        for proc in (ref, *cands.values()):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait()

    curves = {ref_name: curve(read_epochs(ref_dir), args.metric)}
    curves.update({name: curve(read_epochs(out / name), args.metric, offsets.get(name, 0.0)) for name in names})
    at_t = {name: last_scored_within(points, budget) for name, points in curves.items()}
    print(f"\n{args.metric} (x1e3, lower is better) against {args.holdout:.0%} held-out images, by training time:")
    for name, points in curves.items():
        shown = ", ".join(f"e{e} {s:.0f}s {v:.1f}" for e, s, v in points if v is not None)
        print(f"  {name}: {shown}")
    unscored = [name for name, point in at_t.items() if point is None]
    if unscored:
        raise SystemExit(f"no {args.metric} score within T = {budget:.0f} s for {', '.join(unscored)} "
                         f"(score more often: --eval-every)")
    r = at_t[ref_name]
    result = {
        "budget_seconds": round(budget, 1),
        "reference": {"preset": args.reference, "epoch": r[0], "seconds": round(r[1], 1), args.metric: r[2]},
        "candidates": [],
        "threads_per_run": args.threads,
        "backend": args.backend,
    }
    print(f"\nat T = {budget:.0f} s: {args.reference} epoch {r[0]} {args.metric} {r[2]:.1f}")
    for name, spec in zip(names, candidates):
        c = at_t[name]
        result["candidates"].append({"spec": spec, "epoch": c[0], "seconds": round(c[1], 1), args.metric: c[2],
                                     "ratio": round(c[2] / r[2], 3)})
        print(f"  {spec}: epoch {c[0]} {args.metric} {c[2]:.1f}; ratio {c[2] / r[2]:.2f}")
    for name, (epoch, *_rest) in at_t.items():
        grid = out / name / "samples" / f"epoch_{epoch:03d}.png"
        if grid.is_file():
            shutil.copy(grid, out / f"grid_{name}_epoch{epoch:03d}.png")
    if args.resolution_images:
        result["full_size_swd"] = full_size_swd({name: out / name for name in curves}, args)
    (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(curves, args, budget, out / f"{args.metric}_vs_time.png")
    return 0


def report_runs(args) -> int:
    """``--run``: the curves, plot and full-size SWD of existing run folders, written to ``--out``."""
    missing = [str(d) for d in args.run if not (d / "epochs.csv").is_file()]
    if missing:
        raise SystemExit(f"not a run folder (no epochs.csv): {', '.join(missing)}")
    names = [d.name for d in args.run]
    if len(set(names)) != len(names):
        raise SystemExit(f"two runs share a folder name: {names}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    curves = {d.name: curve(read_epochs(d), args.metric) for d in args.run}
    print(f"{args.metric} (x1e3, lower is better) against each run's held-out images, by training time:")
    for name, points in curves.items():
        print(f"  {name}: " + ", ".join(f"e{e} {s / 60:.0f}min {v:.1f}" for e, s, v in points if v is not None))
    result = {"curves": {name: [{"epoch": e, "seconds": round(s, 1), args.metric: v} for e, s, v in points
                                if v is not None] for name, points in curves.items()}}
    if args.resolution_images:
        result["full_size_swd"] = full_size_swd({d.name: d for d in args.run}, args)
    (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(curves, args, None, out / f"{args.metric}_vs_time.png")
    return 0


def full_size_swd(run_dirs: dict, args) -> dict:
    """Per-level SWD of each run's last checkpoint against the held-out photos at every run's
    image size: samples of another size are resized to it first (upscaled with each of
    ``--upscale``'s filters: the finest levels show what an upscale lacks; downscaled with
    LANCZOS: a high-resolution run scored where a low-resolution one is). Each figure is the
    mean over ``--resolution-draws`` disjoint sets of latents, with its min-max: which
    latents are drawn moves a level by several points. Printed, and returned as
    ``{size: {row: figures}}`` (a row is the run's name, with the filter where it is not LANCZOS).
    """
    import numpy as np

    from nebula_keras3.data.folder import load_image_folder
    from nebula_keras3.data.split import split_holdout
    from nebula_keras3.metrics.evaluate import resolution_swd
    from nebula_keras3.sampling.keras_sampler import KerasSampler

    samplers = {name: KerasSampler(run, checkpoint="last") for name, run in run_dirs.items()}
    scores = {}
    for size in sorted({s.image_size for s in samplers.values()}, reverse=True):
        loaded = load_image_folder(args.data, size, progress=False)
        _, held_out = split_holdout(loaded.images, args.holdout, args.seed, listing=loaded.listing)
        held_out = held_out[: args.resolution_images]
        n = len(held_out)
        print(f"\nSWD x1e3 per level at {size} px against {n} held-out images (last checkpoints; mean "
              f"(min-max) over {args.resolution_draws} draws of {n} latents; samples of other sizes resized):")
        scores[str(size)] = {}
        for name, sampler in samplers.items():
            draws = [sampler.sample(k * n, n) for k in range(args.resolution_draws)]  # disjoint seeds
            filters = args.upscale if sampler.image_size < size else ["lanczos"]
            for resample in filters:
                runs = [resolution_swd(held_out, images, seed=args.seed, resample=resample) for images in draws]
                row = {"model_size": sampler.image_size, "epoch": sampler.facts.get("epoch"),
                       "resample": resample if sampler.image_size != size else None, "draws": len(runs),
                       **{k: round(float(np.mean([r[k] for r in runs])), 2) for k in runs[0]},
                       "range": {k: [round(min(r[k] for r in runs), 2), round(max(r[k] for r in runs), 2)]
                                 for k in runs[0]}}
                label = name if resample == "lanczos" else f"{name} ({resample})"
                scores[str(size)][label] = row
                levels = "  ".join(f"{k} {row[k]:.1f} ({lo:.1f}-{hi:.1f})" for k, (lo, hi) in row["range"].items())
                resized = f" (from {sampler.image_size} px, {resample})" if sampler.image_size != size else ""
                print(f"  {name}{resized}, epoch {row['epoch']}: {levels}")
    return scores


def plot(curves, args, budget, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, points in curves.items():
        xs = [s / 60 for _, s, v in points if v is not None]
        ys = [v for _, s, v in points if v is not None]
        ax.plot(xs, ys, marker="o", markersize=3, label=name)
    if budget is not None:
        ax.axvline(budget / 60, color="grey", linestyle=":",
                   label="T" if args.budget_minutes is not None else f"{args.reference} at {args.reference_epochs} epochs")
    ax.set_xlabel("training time (min)")
    ax.set_ylabel(f"{args.metric} x1e3 vs held-out")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
