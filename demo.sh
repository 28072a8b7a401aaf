#!/usr/bin/env bash
# Demo: generate small synthetic CTC sequences (seed 7, never used in training), segment them with the
# shipped models through the real run scripts, score SEG/PESEG offline and write preview pictures.
# Usage: ./demo.sh [OUT_DIR] [DATASET ...]    (default: demo_data, all three datasets)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"$root/scripts/bootstrap.sh"
py="$root/.venv/bin/python"
out="$(mkdir -p "${1:-$root/demo_data}" && cd "${1:-$root/demo_data}" && pwd)"
shift || true
datasets=("$@"); [ ${#datasets[@]} -gt 0 ] || datasets=(MDA231 TRIC A549-SIM)
declare -A folder=([MDA231]=Fluo-C3DL-MDA231 [TRIC]=Fluo-N3DL-TRIC [A549-SIM]=Fluo-C3DH-A549-SIM)
declare -A models=([MDA231]="MDA231-seg MDA231-centers" [TRIC]="TRIC-seg" [A549-SIM]="A549-SIM-seg")
for ds in "${datasets[@]}"; do
  small=(); [ "$ds" = TRIC ] && small=(--small)
  echo "== $ds: generating 3 synthetic frames in $out/${folder[$ds]}"
  "$py" -m efficientcellseg synth --profile "$ds" --out "$out" --seq 01 --frames 3 --seed 7 "${small[@]}" -q
  echo "== $ds: ./run_$ds.sh 01 $out"
  "$root/run_$ds.sh" 01 "$out"
  "$py" -m efficientcellseg preview --input "$out/${folder[$ds]}/01" --res "$out/${folder[$ds]}/01_RES" \
      --out "$out/preview/$ds" -q
  margs=(); for m in ${models[$ds]}; do margs+=(--model "$root/models/$m"); done
  echo "== $ds: SEG on synthetic data (not a CTC result)"
  "$py" -m evaluation.seg --gt "$out/${folder[$ds]}/01_GT/SEG" --res "$out/${folder[$ds]}/01_RES" "${margs[@]}"
done
echo "== previews: $out/preview/<dataset>/*.png"
