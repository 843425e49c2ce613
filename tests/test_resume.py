"""The resume contract (training/run_folder.py): a run interrupted at seeded random moments
and resumed leaves the folder one uninterrupted run leaves; a folder whose files disagree is
repaired where the checkpoint vouches for the truth, refused naming the file where not.

Each case is a list of ``nebula train`` options. Interruptions (tests/support/resume_harness.py):
SIGKILL, SIGTERM, a torn write then SIGKILL (own process), a non-finite loss, a full disk.
A failure prints its plan; ``NEBULA_RESUME_SEED=N`` draws another set of moments.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from support.resume_harness import IN_PROCESS_KINDS, SIGNAL_KINDS, interrupt
from support.run_contract import contract_view, view_differences

from nebula_keras3.training import trainer
from nebula_keras3.training.checkpoint import BEST_FILE, checkpoint_path, read_header
from nebula_keras3.training.holdout_scoring import EVAL_COLUMNS
from nebula_keras3.training.run_folder import (
    EPOCHS_CSV,
    LOSSES_CSV,
    RunError,
    read_table,
    repair,
    sample_grid_path,
    write_csv_atomic,
)
from nebula_keras3.training.stop_signal import STOPPED_EXIT_CODE

BACKEND = keras.backend.backend()
HARNESS = Path(__file__).parent / "support" / "resume_harness.py"
SEED = int(os.environ.get("NEBULA_RESUME_SEED", "0"))
FIRST_EPOCHS, EPOCHS = 2, 3  # the run is started for 2 epochs, then resumed to 3
BASE = ["train", "--preset", "tiny", "--quiet"]
TWO_DEVICES = {"XLA_FLAGS": (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2").strip()}

# The state a checkpoint carries beside the weights and optimizers, in one run: EMA weights,
# ADA's p and its counters, bf16 compute, held-out scoring (best.npz, rows with and without
# figures). ADA's target is one the tiny D passes at once, so p moves (0 -> 0.4 -> 0.8) in the
# run's 9 steps. The nebula family's own state (spectral norm, R1, DiffAugment draws) resumes
# exactly in test_nebula_training.py.
EVERY_STATE = ["--ema-decay", "0.9", "--ada-target", "0.05", "--ada-kimg", "0.08", "--mixed-precision", "bf16",
               "--holdout", "0.25", "--eval-every", "2"]

# id -> (options of the run, options of every invocation (resumes too), backends it applies to
# (None: all), environment)
CASES = {
    "every-state": (EVERY_STATE, [], None, {}),
    "data-parallel": ([], ["--distribute", "data-parallel"], {"jax"}, TWO_DEVICES),
}


def _run_cli(args, run_dir, kind="count", at=0, seed=0, env=None):
    """``nebula`` with ``args`` under an interruption; returns (exit status, writes, steps).

    Signal kinds, and any run that needs its own environment, run in a subprocess."""
    if kind in SIGNAL_KINDS or env:
        proc = subprocess.run([sys.executable, str(HARNESS), str(run_dir), kind, str(at), str(seed), "--", *args],
                              env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=600)
        lines = proc.stdout.strip().splitlines()
        counts = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {"writes": None, "steps": None}
        return proc.returncode, counts["writes"], counts["steps"], proc.stderr[-1500:]
    from nebula_keras3.cli import main as nebula

    with interrupt(run_dir, kind, at, seed) as inj:
        try:
            nebula(args, prog_name="nebula", standalone_mode=False)
            status, message = 0, ""
        except Exception as e:  # noqa: BLE001 - judged below
            status, message = 1, f"{type(e).__name__}: {e}"
    return status, inj.writes, inj.steps, message


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """``reference(case)``: (folder, writes, steps) of the case's uninterrupted run, made once."""
    made = {}

    def get(case):
        if case not in made:
            options, every, _, env = CASES[case]
            ref = tmp_path_factory.mktemp(case) / "reference"
            status, writes, steps, message = _run_cli(
                [*BASE, *options, *every, "--epochs", str(EPOCHS), "--out", str(ref)], ref, env=env)
            assert status == 0, message
            made[case] = ref, writes, steps
        return made[case]

    return get


@pytest.mark.parametrize("case", list(CASES))
def test_killed_and_resumed_runs_leave_the_uninterrupted_folder(case, reference, tmp_path):
    options, every, backends, env = CASES[case]
    if backends and BACKEND not in backends:
        pytest.skip(f"{case} applies to {', '.join(sorted(backends))} only")
    ref, writes, steps = reference(case)
    run = tmp_path / "run"
    rng = random.Random(f"{case}:{SEED}")
    kinds = [rng.choice(SIGNAL_KINDS), rng.choice(IN_PROCESS_KINDS)]
    if not env:  # one more, cheap where it runs in this process
        kinds.append(rng.choice(IN_PROCESS_KINDS))
    rng.shuffle(kinds)
    plan, interrupted = [], 0
    for kind in kinds + ["count"]:  # the last: resume to the end, uninterrupted
        done = read_header(checkpoint_path(run))["epoch"] if checkpoint_path(run).is_file() else 0
        if (run / "config.json").is_file():
            args, target = [*BASE[:1], "--resume", str(run), "--epochs", str(EPOCHS), "--quiet", *every], EPOCHS
        else:
            args, target = [*BASE, *options, *every, "--epochs", str(FIRST_EPOCHS), "--out", str(run)], FIRST_EPOCHS
        left = max(1, target - done) / EPOCHS
        at = 0 if kind == "count" else rng.randint(1, max(1, round((steps if kind == "nan" else writes) * left)))
        status, _, _, message = _run_cli(args, run, kind, at, seed=rng.randrange(2**31), env=env)
        plan.append(f"{kind}@{at} from epoch {done}: exit {status}")
        interrupted += status != 0
        if kind == "count":
            assert status == 0, f"{plan}: {message}"
        else:
            assert status in (0, 1, -9, -15, STOPPED_EXIT_CODE), f"{plan}: {message}"
    print(f"{case} (seed {SEED}):", "; ".join(plan))  # shown with -s / -rP
    assert interrupted, f"no attempt was interrupted: {plan}"
    differences = view_differences(contract_view(ref), contract_view(run))
    assert not differences, f"case {case}, seed {SEED}, plan {plan}:\n" + "\n".join(differences)


@pytest.mark.backend_independent  # Keras' fit loop stops on stop_training under every backend
def test_sigterm_stops_after_the_epoch_in_flight_with_its_checkpoint(tmp_path):
    """A scheduler's SIGTERM: the epoch in flight ends with every file and its checkpoint, the
    run stops (exit 143, no generator.keras), and --resume goes on from that epoch."""
    import time

    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "nebula_keras3", *BASE, "--epochs", "500", "--out", str(run)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while len(read_table(run / EPOCHS_CSV)[1]) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    seen = len(read_table(run / EPOCHS_CSV)[1])  # epochs done (at least) when the signal goes
    proc.terminate()
    output = proc.communicate(timeout=300)[0]
    assert proc.returncode == STOPPED_EXIT_CODE, output
    epoch = read_header(checkpoint_path(run))["epoch"]
    assert seen <= epoch < 500, output
    assert f"SIGTERM: stopped after epoch {epoch} of 500" in output and f"--resume {run}" in output
    # The folder stands at the checkpoint's epoch, with nothing left for a resume to repair.
    assert len(read_table(run / EPOCHS_CSV)[1]) == epoch and sample_grid_path(run, epoch).is_file()
    assert not sample_grid_path(run, epoch + 1).exists() and not (run / "generator.keras").exists()
    lines = []
    trainer.resume(run, epochs=epoch + 1, progress=False, echo=lines.append)
    assert (run / "generator.keras").is_file()
    assert not any("cut back" in line or "removed" in line for line in lines), lines


# --- a folder whose files disagree -------------------------------------------------------------


@pytest.fixture
def finished_run(reference):
    """The every-state case's reference: 3 epochs, scored at 2 (rows 1 and 3 without figures)."""
    return reference("every-state")[0]


def _copy(run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    return copy


def _repair(run):
    header = read_header(checkpoint_path(run))
    notes = []
    repair(run, epoch=header["epoch"], step=header["step"], echo=notes.append, best_key="swd",
           blank_columns=lambda e: set(EVAL_COLUMNS) if e % 2 else set())
    return notes


def test_a_folder_ahead_of_its_checkpoint_is_cut_back(finished_run, tmp_path):
    run = _copy(finished_run, tmp_path)
    before = contract_view(run)
    columns, rows, _ = read_table(run / EPOCHS_CSV)
    write_csv_atomic(run / EPOCHS_CSV, columns, rows + [{**rows[-1], "epoch": 4, "step": 12}])
    losses_columns = read_table(run / LOSSES_CSV)[0]
    with open(run / LOSSES_CSV, "a") as f:  # one whole row of the next epoch, one torn
        f.write(",".join(["4", "10"] + ["0.5"] * (len(losses_columns) - 2)) + "\r\n4,11,0.5")
    shutil.copy(sample_grid_path(run, 3), sample_grid_path(run, 4))
    notes = _repair(run)
    assert any("epochs.csv: cut back to epoch 3" in n for n in notes), notes
    assert not view_differences(before, contract_view(run))


def test_lost_rows_of_unscored_epochs_are_rebuilt_from_losses_csv(finished_run, tmp_path):
    """What the old resume did under --holdout/--eval-every: it dropped the rows without figures."""
    run = _copy(finished_run, tmp_path)
    before = contract_view(run)
    columns, rows, _ = read_table(run / EPOCHS_CSV)
    write_csv_atomic(run / EPOCHS_CSV, columns, [r for r in rows if r["swd"]])
    notes = _repair(run)
    assert any("rebuilt the rows of epoch(s) 1, 3" in n for n in notes), notes
    assert view_differences(before, contract_view(run)) == []
    assert [r["seconds"] for r in read_table(run / EPOCHS_CSV)[1]][0::2] == ["", ""]  # wall clock: unknown


def test_a_best_checkpoint_a_kill_left_behind_is_rewritten_from_the_last(finished_run, tmp_path):
    """The kill fell after last.npz and before best.npz of an epoch that scored best: best.npz
    becomes last.npz's state with that score in its header."""
    run = _copy(finished_run, tmp_path)
    columns, rows, _ = read_table(run / EPOCHS_CSV)
    assert rows[1]["swd"] and not rows[2]["swd"]  # epoch 2 scored (and is best.npz), epoch 3 not
    rows[2] = {**rows[2], "swd": str(round(float(rows[1]["swd"]) / 2, 5))}
    write_csv_atomic(run / EPOCHS_CSV, columns, rows)
    notes = _repair(run)
    assert any("best.npz: rewritten from last.npz (epoch 3)" in n for n in notes), notes
    last, best = checkpoint_path(run), checkpoint_path(run, BEST_FILE)
    with np.load(last) as a, np.load(best) as b:
        assert a.files == b.files
        for k in a.files:
            if k != "header":
                np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert read_header(best) == {**read_header(last), "swd": float(rows[2]["swd"])}


@pytest.mark.parametrize("damage, message", [
    ("no checkpoint", r"last.npz is missing but epochs.csv/losses.csv record epoch 3"),
    ("scored row lost", r"epochs.csv has no row for epoch 2 .* swd"),
    ("garbled row", r"losses.csv, line 3, is not a row of this run"),
    ("grid lost", r"samples/epoch_002.png is missing"),
    ("steps lost", r"losses.csv holds steps 1..8 \(8\) of epochs 1..3, but .* is at step 9"),
    ("best is not the best", r"best.npz holds epoch 3, but the best swd in epochs.csv is epoch 2"),
])
def test_a_folder_the_checkpoint_cannot_vouch_for_is_refused_naming_the_file(finished_run, tmp_path, damage, message):
    run = _copy(finished_run, tmp_path)
    columns, rows, _ = read_table(run / EPOCHS_CSV)
    loss_columns, loss_rows, _ = read_table(run / LOSSES_CSV)
    if damage == "no checkpoint":
        checkpoint_path(run).unlink()
        with pytest.raises(RunError, match=message):
            repair(run, epoch=0, step=0, echo=lambda *_: None)
        return
    if damage == "scored row lost":
        write_csv_atomic(run / EPOCHS_CSV, columns, [r for r in rows if r["epoch"] != "2"])
    elif damage == "garbled row":
        lines = (run / LOSSES_CSV).read_text().splitlines(keepends=True)
        lines[2] = "1,2,oops\r\n"
        (run / LOSSES_CSV).write_text("".join(lines))
    elif damage == "grid lost":
        sample_grid_path(run, 2).unlink()
    elif damage == "steps lost":
        write_csv_atomic(run / LOSSES_CSV, loss_columns, loss_rows[:-1])
    elif damage == "best is not the best":
        path = checkpoint_path(run, BEST_FILE)
        with np.load(path) as data:
            arrays = {k: data[k] for k in data.files}
        header = json.loads(arrays["header"].tobytes().decode())
        assert header["epoch"] == 2  # the only scored epoch
        arrays["header"] = np.frombuffer(json.dumps({**header, "epoch": 3}).encode(), dtype=np.uint8)
        with open(path, "wb") as f:
            np.savez(f, **arrays)
    with pytest.raises(RunError, match=message):
        _repair(run)
