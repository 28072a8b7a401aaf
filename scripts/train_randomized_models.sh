#!/usr/bin/env bash
# Domain-randomized fine-tuning of the shipped models (issue #14), on CPU, as it was run on 2026-12-01.
# Usage: scripts/train_randomized_models.sh [MINUTES_SCALE]   (default 1.0)
# Training data: the fixed-profile sequences of the first stages (seeds 101-106) plus domain-randomized
# sequences (`synth --randomize`, seeds 1011-1058; ranges in efficientcellseg.randomize.RANGES / docs/synth.md).
# Each model starts from its shipped folder (`--init-from`); MDA231 becomes ONE network with two outputs
# (task seg_centers: foreground + centre heatmap), started from MDA231-seg (its head is channel 0, the heatmap
# channel is new). Strong photometric augmentation (`--augment strong`), weight average (EMA 0.999).
# Results go to $RANDOMIZED_WORK/<name> (default runs/rnd); check them with benchmarks/accuracy.py before copying
# into models/ (see README "Generalization"). Every training resumes from its checkpoint.pt when one exists, so
# running the script again continues where the last session stopped (point RANDOMIZED_WORK at a folder outside
# the work tree to keep checkpoints between sessions).
set -euo pipefail
scale="${1:-1.0}"
source "$(dirname "${BASH_SOURCE[0]}")/shipped_common.sh"
d="$root/runs/rnd_train"
work="${RANDOMIZED_WORK:-$root/runs/rnd}"
mkdir -p "$d" "$work"
for ds in A549-SIM TRIC MDA231; do randomized_training_data "$d" "$ds"; done

fit() {  # name dataset-folder minutes [train flags...]
  local name="$1" ds="$2" m; m="$(mins "$3")"; shift 3
  "$py" -m efficientcellseg train --data "$d/$ds" --out "$work/$name" --threads 1 --seed 5 --use-st \
    --ema-decay 0.999 --augment strong --lr 3e-4 --epochs 1000 --patience 1000 --time-limit "$m" --resume "$@" \
    >>"$work/$name.log" 2>&1
}
fit A549-SIM-seg Fluo-C3DH-A549-SIM 40 --dataset A549-SIM --task seg --init-from "$root/models/A549-SIM-seg" \
  --seqs 01 02 11 12 13 14 15 16 17 18 --crop 192 --batch-size 4 --steps-per-epoch 100 &
fit TRIC-seg Fluo-N3DL-TRIC 85 --dataset TRIC --task seg --init-from "$root/models/TRIC-seg" \
  --seqs 01 02 11 12 13 14 15 16 --crop 128 --batch-size 4 --steps-per-epoch 60 &
fit MDA231-seg-centers Fluo-C3DL-MDA231 80 --dataset MDA231 --task seg_centers \
  --init-from "$root/models/MDA231-seg" --seqs 01 02 03 11 12 13 14 15 16 17 18 --crop 160 --batch-size 4 \
  --steps-per-epoch 60 &
wait
