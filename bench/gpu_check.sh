#!/usr/bin/env bash
# GPU readiness check: every backend trains nebula64 and nebula128 at float32 and at its 16-bit
# mode, prints img/s per row, checks the losses are finite and that the run's exported ONNX
# (float and int8) passes its parity checks.
#
#   bench/gpu_check.sh            # a machine with one NVIDIA GPU, from a fresh clone: installs the
#                                 # CUDA builds from PyPI (one venv per backend, .venv-gpu-<backend>)
#   bench/gpu_check.sh --cpu      # the same rows on the CPU with tiny step counts, in $VENV (.venv)
#   bench/gpu_check.sh --python python3 --no-export
#                                 # a GPU machine that cannot reach PyPI: the backends already
#                                 # installed for that interpreter, with keras and this package
#                                 # (its wheel) on PYTHONPATH and PYTHONSAFEPATH=1 (else the
#                                 # repo's nebula_keras3/ folder, which lacks .export, shadows
#                                 # the wheel); a backend it cannot import fails its rows. Then:
#   bench/gpu_check.sh --export-only --out DIR
#                                 # later, where .venv has the export extras: exports and checks
#                                 # parity of the runs in DIR (their config and generator.keras)
#
# Options: --backends "torch jax tensorflow"  --presets "nebula64 nebula128"  --out DIR
# Environment: HALF_<backend>=bf16|fp16 (the 16-bit mode of a backend; default bf16),
#   EPOCHS / STEPS / BATCH (per row: EPOCHS epochs of at most STEPS steps; epoch 1 compiles
#   and is not timed unless it is the only one, as in --cpu; img/s is the mean over the timed
#   epochs, sample grid and checkpoint included).
# Rows run one at a time. In GPU mode the torch venv installs first and its rows start while the
# jax and tensorflow venvs install in the background. The export (and its parity checks) runs on
# the CPU (CUDA_VISIBLE_DEVICES=''), as `nebula export` would on a serving build box.
# Exit status 0 only when every row trained with finite losses and exported with parity (with
# --no-export: trained; --export-only: exported).
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=gpu
PYTHON_ALL=""    # --python: one interpreter for every backend, nothing installed
EXPORT=1         # --no-export: train only; --export-only: export the runs already in --out
TRAIN=1
BACKENDS="torch jax tensorflow"
PRESETS="nebula64 nebula128"
OUT=runs/gpu-check
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu) MODE=cpu ;;
    --python) PYTHON_ALL="$2"; shift ;;
    --no-export) EXPORT=0 ;;
    --export-only) TRAIN=0 ;;
    --backends) BACKENDS="$2"; shift ;;
    --presets) PRESETS="$2"; shift ;;
    --out) OUT="$2"; shift ;;
    -h|--help) sed -n '2,28p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
for b in $BACKENDS; do
  case "$b" in torch|jax|tensorflow) ;; *) echo "gpu_check.sh: unknown backend $b" >&2; exit 2 ;; esac
done

if [ "$TRAIN" = 0 ]; then
  MODE=export
elif [ "$MODE" = cpu ]; then
  EPOCHS=${EPOCHS:-1}; STEPS=${STEPS:-1}; BATCH=${BATCH:-4}
else
  EPOCHS=${EPOCHS:-3}; STEPS=${STEPS:-32}; BATCH=${BATCH:-32}
  command -v nvidia-smi >/dev/null || { echo "gpu_check.sh: no nvidia-smi; use --cpu on a machine without a GPU" >&2; exit 1; }
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
fi
mkdir -p "$OUT"
T0=$SECONDS

python_of() {  # the interpreter that runs backend $1
  if [ -n "$PYTHON_ALL" ]; then echo "$PYTHON_ALL"
  elif [ "$MODE" = gpu ]; then echo ".venv-gpu-$1/bin/python"
  else echo "${VENV:-.venv}/bin/python"; fi
}

install() {  # GPU mode: a venv with the CUDA build of backend $1 plus the export extras
  local b=$1 v=".venv-gpu-$1"
  local pkg
  case "$b" in
    torch) pkg="torch" ;;                                  # PyPI's Linux torch wheels are CUDA builds
    jax) pkg="jax[cuda12]" ;;
    tensorflow) pkg="tensorflow[and-cuda]>=2.21,<2.22" ;;
  esac
  { python3 -m venv "$v" && "$v/bin/pip" install -q --upgrade pip \
      && "$v/bin/pip" install -q -e ".[export]" "$pkg"; } >"$OUT/install-$b.log" 2>&1
}

device_check() {  # GPU mode: the backend sees the GPU
  local b=$1 py; py=$(python_of "$b")
  case "$b" in
    torch) "$py" -c "import torch; assert torch.cuda.is_available(), 'torch sees no GPU'; print('torch', torch.__version__, torch.cuda.get_device_name(0))" ;;
    jax) "$py" -c "import jax; d = jax.devices(); assert d[0].platform == 'gpu', f'jax sees {d}'; print('jax', jax.__version__, d[0])" ;;
    tensorflow) TF_CPP_MIN_LOG_LEVEL=3 "$py" -c "import tensorflow as tf; g = tf.config.list_physical_devices('GPU'); assert g, 'tensorflow sees no GPU'; print('tensorflow', tf.__version__, g[0].name)" ;;
  esac
}

SUMMARY="$OUT/summary.tsv"
FAILED=0
# Each row leaves $run.stats (img/s, losses) once trained and $run.export (ONNX max diff, int8
# mean/max) once exported; the summary is put together from them at the end, so --export-only
# can complete rows that another machine trained.

train_row() {  # train one row, check its losses
  local b=$1 preset=$2 prec=$3 py run
  py=$(python_of "$b")
  run="$OUT/$b-$preset-$prec"
  rm -rf "$run" "$run.stats" "$run.export"
  if ! KERAS_BACKEND=$b TF_CPP_MIN_LOG_LEVEL=3 "$py" -m nebula_keras3 train --preset "$preset" \
      --epochs "$EPOCHS" --steps-per-epoch "$STEPS" --batch-size "$BATCH" --mixed-precision "$prec" \
      --quiet --out "$run" >"$run.train.log" 2>&1; then
    echo "FAIL $b $preset $prec: training failed (tail of $run.train.log):"; tail -5 "$run.train.log"
    FAILED=1; return 1
  fi
  local stats
  if ! stats=$("$py" - "$run" <<'EOF2'
import csv, math, sys
run = sys.argv[1]
epochs = list(csv.DictReader(open(f"{run}/epochs.csv")))
timed = epochs[1:] or epochs
ips = sum(float(e["images_per_second"]) for e in timed) / len(timed)
rows = list(csv.DictReader(open(f"{run}/losses.csv")))
bad = [(r["step"], k) for r in rows for k in ("d_loss", "g_loss") if not math.isfinite(float(r[k]))]
print(f"{ips:.1f}\t{'finite' if rows and not bad else 'NOT FINITE ' + str(bad[:3])}")
sys.exit(1 if bad or not rows else 0)
EOF2
  ); then
    echo "FAIL $b $preset $prec: $stats"; FAILED=1; return 1
  fi
  echo "$stats" >"$run.stats"
  echo "ok   $b $preset $prec: $(echo "$stats" | cut -f1) img/s, losses finite  [$((SECONDS - T0)) s]"
}

export_row() {  # export a trained row on the CPU and check ONNX parity (float and int8)
  local b=$1 preset=$2 prec=$3 py=$4 run exp onnx int8
  run="$OUT/$b-$preset-$prec"
  [ -f "$run.stats" ] || return 0
  if ! exp=$(CUDA_VISIBLE_DEVICES='' KERAS_BACKEND=tensorflow TF_CPP_MIN_LOG_LEVEL=3 "$py" -m nebula_keras3 export \
      "$run" --onnx "$run/generator.onnx" --onnx-int8 "$run/generator.int8.onnx" 2>&1); then
    echo "FAIL $b $preset $prec: export/parity: $(echo "$exp" | tail -1)"; FAILED=1
    printf "export failed\t-\n" >"$run.export"; return 1
  fi
  onnx=$(echo "$exp" | sed -n 's/.*max uint8 diff \([0-9]*\).*/\1/p' | sort -n | tail -1)
  int8=$(echo "$exp" | sed -n 's/^int8 ONNX vs Keras: mean uint8 diff \([0-9.e-]*\), max \([0-9]*\).*/\1\/\2/p')
  printf "%s\t%s\n" "$onnx" "$int8" >"$run.export"
  echo "ok   $b $preset $prec: ONNX max uint8 diff $onnx, int8 $int8  [$((SECONDS - T0)) s]"
}

precisions_of() { local v="HALF_$1"; echo "none ${!v:-bf16}"; }

if [ "$TRAIN" = 1 ]; then
  declare -A PID
  if [ "$MODE" = gpu ] && [ -z "$PYTHON_ALL" ]; then
    first=${BACKENDS%% *}
    for b in $BACKENDS; do
      [ "$b" = "$first" ] && continue
      install "$b" & PID[$b]=$!
    done
    install "$first" || { echo "install of $first failed: $OUT/install-$first.log" >&2; exit 1; }
  fi
  for b in $BACKENDS; do
    if [ "$MODE" = gpu ]; then
      if [ -n "${PID[$b]:-}" ]; then
        wait "${PID[$b]}" || { echo "install of $b failed: $OUT/install-$b.log" >&2; FAILED=1; continue; }
      fi
      device_check "$b" || { echo "FAIL $b: no GPU (or not installed for $(python_of "$b"))"; FAILED=1; continue; }
      echo "[$((SECONDS - T0)) s] $b ready"
    fi
    for preset in $PRESETS; do
      for prec in $(precisions_of "$b"); do
        train_row "$b" "$preset" "$prec" || continue
        [ "$EXPORT" = 1 ] && { export_row "$b" "$preset" "$prec" "$(python_of "$b")" || true; }
      done
    done
  done
else
  for b in $BACKENDS; do for preset in $PRESETS; do for prec in $(precisions_of "$b"); do
    export_row "$b" "$preset" "$prec" "${VENV:-.venv}/bin/python" || true
  done; done; done
fi

printf "backend\tpreset\tprecision\timg/s\tlosses\tonnx max uint8\tint8 mean/max uint8\n" >"$SUMMARY"
for b in $BACKENDS; do for preset in $PRESETS; do for prec in $(precisions_of "$b"); do
  run="$OUT/$b-$preset-$prec"
  if [ -f "$run.stats" ]; then stats=$(cat "$run.stats"); else stats=$(printf "not trained\t-"); FAILED=1; fi
  if [ -f "$run.export" ]; then exp=$(cat "$run.export")
  elif [ "$EXPORT" = 0 ]; then exp=$(printf "pending (--export-only)\t-")
  else exp=$(printf "not exported\t-"); FAILED=1; fi
  printf "%s\t%s\t%s\t%s\t%s\n" "$b" "$preset" "$prec" "$stats" "$exp" >>"$SUMMARY"
done; done; done

echo
[ "$MODE" = export ] || echo "mode $MODE, batch $BATCH, $EPOCHS epochs x <= $STEPS steps per row (img/s: mean over the epochs after the first, or the first when alone)"
echo "$((SECONDS - T0)) s in all"
column -t -s $'\t' "$SUMMARY" 2>/dev/null || cat "$SUMMARY"
exit $FAILED
