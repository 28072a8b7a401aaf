#!/usr/bin/env bash
# Shared body of the run_<DATASET>.sh entry points: ctc_run.sh DATASET CTC_FOLDER SEQ [ROOT]
# Reads ROOT/CTC_FOLDER/SEQ and writes ROOT/CTC_FOLDER/SEQ_RES. ROOT defaults to the folder that holds
# this package (the CTC submission convention: ../<Dataset>/01 seen from the package folder).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dataset="$1"; folder="$2"
if [ $# -lt 3 ] || [ $# -gt 4 ]; then
  echo "usage: run_${dataset}.sh SEQ [ROOT]   e.g. run_${dataset}.sh 01  (reads ROOT/${folder}/SEQ; ROOT defaults to ..)" >&2
  exit 2
fi
seq="$3"; root="${4:-$here/..}"
input="$root/$folder/$seq"
[ -d "$input" ] || { echo "error: input folder $input does not exist (expected ROOT/${folder}/${seq})" >&2; exit 2; }
py="$here/.venv/bin/python"
[ -x "$py" ] || py="$(command -v python3)" || { echo "error: no Python found; run ./test.sh or scripts/bootstrap.sh first" >&2; exit 2; }
exec "$py" -m efficientcellseg predict --dataset "$dataset" --input "$input" --output "${input}_RES" --device auto
