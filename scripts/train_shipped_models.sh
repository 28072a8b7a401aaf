#!/usr/bin/env bash
# Retrain the four shipped models (models/*) on SYNTHETIC data from efficientcellseg.synth, on CPU.
# Usage: scripts/train_shipped_models.sh [MINUTES_SCALE]   (default 1.0: 40/30/40/30 minutes for MDA231-seg,
# MDA231-centers, TRIC-seg, A549-SIM-seg; two trainings at a time, 1 thread each, about 70 min wall on 2 cores)
# Data seeds 101-106 are reserved for training, 150-152 for tuning; tests, demo and evaluation use other seeds.
# The shipped models of this session were trained in two parts (the first run, then --resume of TRIC-seg,
# MDA231-seg and MDA231-centers for more minutes); see each MODEL_CARD.md for epochs, steps and wall time.
set -euo pipefail
scale="${1:-1.0}"
source "$(dirname "${BASH_SOURCE[0]}")/shipped_common.sh"
work="$root/runs/shipped"
mkdir -p "$work"
gen "$data" MDA231 01 101 12; gen "$data" MDA231 02 102 12
gen "$data" TRIC 01 103 8 --small; gen "$data" TRIC 02 104 8 --small
gen "$data" A549-SIM 01 105 15; gen "$data" A549-SIM 02 106 15

fit() {  # name dataset-folder minutes [train flags...]
  local name="$1" ds="$2" m; m="$(mins "$3")"; shift 3
  "$py" -m efficientcellseg train --data "$data/$ds" --out "$work/$name" --threads 1 --seed 0 --use-st \
    --epochs 1000 --patience 12 --time-limit "$m" "$@" >"$work/$name.log" 2>&1
  install_model "$work" "$name"
}
( fit MDA231-seg Fluo-C3DL-MDA231 40 --dataset MDA231 --task seg --crop 160 --batch-size 4 --steps-per-epoch 150
  fit MDA231-centers Fluo-C3DL-MDA231 30 --dataset MDA231 --task centers --crop 160 --batch-size 4 \
    --steps-per-epoch 150 ) &
( fit TRIC-seg Fluo-N3DL-TRIC 40 --dataset TRIC --task seg --crop 128 --batch-size 4 --steps-per-epoch 150
  fit A549-SIM-seg Fluo-C3DH-A549-SIM 30 --dataset A549-SIM --task seg --crop 192 --batch-size 4 \
    --steps-per-epoch 150 ) &
wait
# post-processing tuned for SEG on separate sequences (seeds 150-152), stored in the model folders
gen "$tune_data" TRIC 01 150 2 --small
gen "$tune_data" MDA231 01 151 4
gen "$tune_data" A549-SIM 01 152 3
"$py" -m efficientcellseg tune --dataset TRIC --input "$tune_data/Fluo-N3DL-TRIC/01" --write
"$py" -m efficientcellseg tune --dataset MDA231 --input "$tune_data/Fluo-C3DL-MDA231/01" --write
"$py" -m efficientcellseg tune --dataset A549-SIM --input "$tune_data/Fluo-C3DH-A549-SIM/01" --write
"$py" -m efficientcellseg verify-models
