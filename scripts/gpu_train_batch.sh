#!/usr/bin/env bash
# Training batch for a lent GPU machine (issue #14), in one call of about MINUTES + 3 minutes:
#   1. generates training data on the machine's CPU cores, in parallel: the fixed-profile sequences of the CPU
#      recipes plus 48 domain-randomized draws of ONE frame each per dataset (sequences 31-78), with seeds that
#      no evaluation or tuning uses (MDA231 2301-2348, TRIC 2201-2248 `--small`, A549-SIM 2101-2148); family B
#      is never used. Many one-frame draws, not a few sequences of several frames: the CPU fine-tunings of
#      2026-12-05 gained more on unseen randomized frames from 48 draws x 1 frame than from 6 x 4, and with
#      one frame per draw the frame-wise validation split holds out draws the network never saw
#      (docs/generalization.md);
#   2. fine-tunes each dataset's shipped network (--init-from models/<name>) on the GPU, all at once, with the
#      input flags of the shipped network's last training (shipped_recipe_flags in scripts/recipe.sh; TRIC on
#      its raw input), strong augmentation and a weight average, for MINUTES each; for MDA231 also the opt-in
#      one network (models/MDA231-onenet, --task seg_centers) goes on distilling from the shipped pair
#      (--distill-from) as it was trained, encoder frozen and normalisation statistics kept (--freeze-encoder
#      --freeze-bn; training the encoder too lost on the tuning set on the CPU; docs/generalization.md,
#      2026-12-06, thirteenth session); TRIC with the crops' zoom widened to 0.5-2 (--scale-range; the preset's
#      0.8-1.25 left it halving its SEG on nuclei 0.6x as wide: README, Object size);
#   3. packs each trained model folder (without its checkpoint) into $OUT/<name>.tar, with the training logs
#      (gpu_train.log) and a summary (gpu_train.json): at most 6 files, as the device tool brings back.
# Usage: scripts/gpu_train_batch.sh [--dry-run] [--minutes M] [DATASET...]   (default 5 minutes, all three)
# On the device (wheels from scripts/device_wheels.sh; see /work/.library/device/README.md):
#   run(command="scripts/gpu_train_batch.sh --minutes 5", carry=[".whl"], timeout_s=560)
# Back here, unpack into runs/gpu/ and check with benchmarks/accuracy.py (family A tuning and evaluation frames,
# family B) before copying anything into models/: nothing here decides what is shipped. Give each network its
# own prob_threshold first (benchmarks/tuning.py --grid prob_threshold=0.1,0.15,...,0.6 on a copy with the shipped
# post-processing, e.g. `efficientcellseg blend SHIPPED TUNED --alpha 1`): fine-tuned networks have come back
# less confident (A549-SIM on CPU, 2026-12-05: best at 0.1-0.15 where the shipped folder uses 0.6).
# --dry-run: CPU, one frame per sequence, two optimizer steps per dataset (the test suite runs it).
set -euo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/device_env.sh"
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/recipe.sh"
minutes=5
dry=0
wanted=()
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry=1 ;;
    --minutes) minutes="$2"; shift ;;
    -h|--help) sed -n '2,/^[^#]/{/^#/p}' "${BASH_SOURCE[0]}"; exit 0 ;;  # the header comment
    MDA231|TRIC|A549-SIM) wanted+=("$1") ;;
    *) echo "error: unknown argument $1 (datasets: MDA231 TRIC A549-SIM; options: --dry-run --minutes M)" >&2; exit 2 ;;
  esac
  shift
done
[ ${#wanted[@]} -gt 0 ] || wanted=(MDA231 TRIC A549-SIM)
out="${OUT:-$root/runs/gpu_train_out}"
work="${GPU_TRAIN_WORK:-$(mktemp -d "${TMPDIR:-/tmp}/gpu_train.XXXXXX")}"
data="$work/data"
mkdir -p "$out" "$data"
cores="$(nproc)"

# --- 1. data: one synth process per sequence, all cores -------------------------------------------------------
jobs="$work/synth_jobs.txt"
: > "$jobs"
job() {  # profile seq seed frames [flags...]
  local profile="$1" seq="$2" seed="$3" frames="$4"
  shift 4
  [ "$dry" = 1 ] && frames=1
  echo "\"$py\" -m efficientcellseg synth --out \"$data\" --profile $profile --seq $seq --seed $seed --frames $frames -q $*" >> "$jobs"
}
n_random=48
[ "$dry" = 1 ] && n_random=2
for ds in "${wanted[@]}"; do
  case "$ds" in
    MDA231) job MDA231 01 101 12; job MDA231 02 102 12
            for i in $(seq 1 "$n_random"); do job MDA231 $((30 + i)) $((2300 + i)) 1 --randomize; done ;;
    TRIC) job TRIC 01 103 6 --small; job TRIC 02 104 6 --small
          for i in $(seq 1 "$n_random"); do job TRIC $((30 + i)) $((2200 + i)) 1 --small --randomize; done ;;
    A549-SIM) job A549-SIM 01 105 8; job A549-SIM 02 106 8
              for i in $(seq 1 "$n_random"); do job A549-SIM $((30 + i)) $((2100 + i)) 1 --randomize; done ;;
  esac
done
[ "$dry" = 1 ] && sed -i '/ --seq 02 /d' "$jobs"  # dry run: one fixed-profile sequence
echo "generating $(wc -l < "$jobs") sequences on $cores cores into $data" >&2
t0=$SECONDS
xargs -P "$cores" -I{} bash -c {} < "$jobs" || { echo "error: generating the training data failed" >&2; exit 1; }
echo "data ready in $((SECONDS - t0)) s" >&2

# --- 2. training: every network at once on the one GPU ---------------------------------------------------------
# one job per model folder: NAME DATASET CTC-FOLDER TASK START-FOLDER [FLAGS...]; for MDA231 also the opt-in one
# network of issue #14 (foreground + centre heatmap, --task seg_centers, models/MDA231-onenet), distilled from
# the shipped pair with its encoder and normalisation statistics kept
models=()
for ds in "${wanted[@]}"; do
  case "$ds" in
    MDA231) teachers="--distill-from $root/models/MDA231-seg $root/models/MDA231-centers --center-weight 0.1 --freeze-encoder --freeze-bn"
            models+=("MDA231-seg MDA231 Fluo-C3DL-MDA231 seg $root/models/MDA231-seg $(shipped_recipe_flags MDA231)"
                     "MDA231-onenet MDA231 Fluo-C3DL-MDA231 seg_centers $root/models/MDA231-onenet/MDA231-seg $(shipped_recipe_flags MDA231) $teachers") ;;
    TRIC) models+=("TRIC-seg TRIC Fluo-N3DL-TRIC seg $root/models/TRIC-seg $(shipped_recipe_flags TRIC) --scale-range 0.5 2") ;;
    A549-SIM) models+=("A549-SIM-seg A549-SIM Fluo-C3DH-A549-SIM seg $root/models/A549-SIM-seg $(shipped_recipe_flags A549-SIM)") ;;
  esac
done
if [ "$dry" = 1 ]; then
  common=(--device cpu --threads 1 --epochs 1 --steps-per-epoch 2 --batch-size 2 --crop 64)
else
  threads=$(( cores / ${#models[@]} )); [ "$threads" -ge 1 ] || threads=1
  common=(--device cuda --threads "$threads" --epochs 1000 --patience 1000 --steps-per-epoch 100 --batch-size 16
          --time-limit "$minutes")
fi
seqs=(01 02 $(seq 31 $((30 + n_random))))
pids=()
names=()
for m in "${models[@]}"; do
  read -r name ds folder task start flags <<< "$m"
  # shellcheck disable=SC2086  # flags is a word list
  "$py" -m efficientcellseg train --dataset "$ds" --task "$task" --data "$data/$folder" --seqs "${seqs[@]}" \
    --out "$work/$name" --init-from "$start" --seed 5 --use-st --ema-decay 0.999 --augment strong \
    --lr 2e-4 $flags "${common[@]}" > "$work/$name.log" 2>&1 &  # common last: the dry run's --crop wins
  pids+=("$!")
  names+=("$name")
done
status=0
for i in "${!pids[@]}"; do
  if ! wait "${pids[$i]}"; then echo "error: training ${names[$i]} failed (see gpu_train.log)" >&2; status=1; fi
done

# --- 3. bring back: one tar per model folder, the logs, a summary (at most 6 files) ---------------------------
: > "$out/gpu_train.log"
for name in "${names[@]}"; do
  { echo "=== $name"; tr '\r' '\n' < "$work/$name.log" | grep -v "it/s\]$\|s/it\]$" | tail -n 60; } >> "$out/gpu_train.log"
  if [ -f "$work/$name/weights.safetensors" ]; then
    tar -cf "$out/$name.tar" -C "$work" --exclude checkpoint.pt "$name"
  fi
done
"$py" - "$work" "$out/gpu_train.json" "${names[@]}" <<'PY'
import json, sys
from pathlib import Path
work, dest, names = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
summary = {}
for name in names:
    cfg = work / name / "config.json"
    if not cfg.is_file():
        summary[name] = {"error": "no model folder written"}
        continue
    t = json.loads(cfg.read_text())["training"]
    summary[name] = {k: t.get(k) for k in ("device", "epochs", "steps", "wall_time_s", "stop_reason", "best_epoch",
                                           "best_validation", "n_frames", "n_train_slices")}
dest.write_text(json.dumps(summary, indent=1))
print(json.dumps(summary, indent=1))
PY
exit "$status"
