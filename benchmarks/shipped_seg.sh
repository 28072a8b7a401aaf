#!/usr/bin/env bash
# SEG of the shipped models on freshly generated SYNTHETIC sequences (seeds 201-203, never used in training),
# run through the real run scripts and scored with evaluation/. Not CTC results.
# Usage: benchmarks/shipped_seg.sh [OUT_DIR] [DATASET ...]   (default: runs/shipped_seg, all three datasets)
# Writes OUT_DIR/<dataset>.txt with the scorer's output and prints a summary.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/bootstrap.sh"
py="$root/.venv/bin/python"
out="$(mkdir -p "${1:-$root/runs/shipped_seg}" && cd "${1:-$root/runs/shipped_seg}" && pwd)"
shift || true
datasets=("$@"); [ ${#datasets[@]} -gt 0 ] || datasets=(MDA231 TRIC A549-SIM)
declare -A folder=([MDA231]=Fluo-C3DL-MDA231 [TRIC]=Fluo-N3DL-TRIC [A549-SIM]=Fluo-C3DH-A549-SIM)
declare -A models=([MDA231]="MDA231-seg MDA231-centers" [TRIC]="TRIC-seg" [A549-SIM]="A549-SIM-seg")
declare -A seed=([MDA231]=201 [TRIC]=202 [A549-SIM]=203)
declare -A frames=([MDA231]=6 [TRIC]=3 [A549-SIM]=6)
for ds in "${datasets[@]}"; do
  small=(); [ "$ds" = TRIC ] && small=(--small)
  rm -rf "$out/${folder[$ds]}"
  "$py" -m efficientcellseg synth --profile "$ds" --out "$out" --seq 01 --frames "${frames[$ds]}" \
      --seed "${seed[$ds]}" "${small[@]}" -q
  start=$(date +%s)
  "$root/run_$ds.sh" 01 "$out"
  took=$(( $(date +%s) - start ))
  margs=(); for m in ${models[$ds]}; do margs+=(--model "$root/models/$m"); done
  { echo "dataset $ds (synthetic, seed ${seed[$ds]}, ${frames[$ds]} frames${small[*]:+, --small}), run script ${took}s"
    "$py" -m evaluation.seg --gt "$out/${folder[$ds]}/01_GT/SEG" --res "$out/${folder[$ds]}/01_RES" \
        "${margs[@]}" --csv "$out/$ds.csv"
  } | tee "$out/$ds.txt"
done
