#!/usr/bin/env bash
# Shared body of the run_<DATASET>.sh entry points: ctc_run.sh DATASET CTC_FOLDER SEQ [ROOT]
# Reads ROOT/CTC_FOLDER/SEQ and writes ROOT/CTC_FOLDER/SEQ_RES. ROOT defaults to the folder that holds
# this package (the CTC submission convention: ../<Dataset>/01 seen from the package folder).
# EFFICIENTCELLSEG_PRECISION=int8 (or bf16, fp32, fp16) selects the network arithmetic (default auto: exact fp32 on
# the CPU, fp16 on a GPU); see README "Speed". With int8, EFFICIENTCELLSEG_CALIBRATE=DIR calibrates on frames of the
# sequence folder DIR instead of the input sequence. EFFICIENTCELLSEG_SCHEDULER=ADDRESS|local[:N] runs the frames
# as Dask tasks (predict --scheduler; see README "Scaling out with Dask").
# EFFICIENTCELLSEG_TRACK=1 links the masks over time after the last frame and writes res_track.txt (README "Tracking").
# EFFICIENTCELLSEG_DENOISE=0 switches off the models' noise-adaptive input smoothing (predict --no-denoise): the
# paper's input exactly (docs/generalization.md). EFFICIENTCELLSEG_ADAPT=0 keeps the models' trained normalisation
# statistics instead of adapting them to the sequence (predict --no-adapt; A549-SIM's model adapts).
# EFFICIENTCELLSEG_SCALE=S resamples every frame in xy by S (0.25-4) before the network, the masks back to the frame's
# size (predict --scale): S > 1 for objects smaller in pixels than the models' training data (README "Object size");
# EFFICIENTCELLSEG_SCALE=auto lets the network choose S per sequence (TRIC).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dataset="$1"; folder="$2"
if [ $# -lt 3 ] || [ $# -gt 4 ]; then
  echo "usage: run_${dataset}.sh SEQ [ROOT]   e.g. run_${dataset}.sh 01  (reads ROOT/${folder}/SEQ; ROOT defaults to ..)" >&2
  exit 2
fi
precision="${EFFICIENTCELLSEG_PRECISION:-auto}"
case "$precision" in
  auto|fp32|fp16|bf16|int8) ;;
  *) echo "error: EFFICIENTCELLSEG_PRECISION=$precision is not one of auto, fp32, fp16, bf16, int8" >&2; exit 2 ;;
esac
track="${EFFICIENTCELLSEG_TRACK:-0}"
case "$track" in
  0|"") track_flag=() ;;
  1) track_flag=(--track) ;;
  *) echo "error: EFFICIENTCELLSEG_TRACK=$track is not 0 or 1" >&2; exit 2 ;;
esac
denoise="${EFFICIENTCELLSEG_DENOISE:-1}"
case "$denoise" in
  1|"") denoise_flag=() ;;
  0) denoise_flag=(--no-denoise) ;;
  *) echo "error: EFFICIENTCELLSEG_DENOISE=$denoise is not 0 or 1" >&2; exit 2 ;;
esac
adapt="${EFFICIENTCELLSEG_ADAPT:-1}"
case "$adapt" in
  1|"") adapt_flag=() ;;
  0) adapt_flag=(--no-adapt) ;;
  *) echo "error: EFFICIENTCELLSEG_ADAPT=$adapt is not 0 or 1" >&2; exit 2 ;;
esac
scale="${EFFICIENTCELLSEG_SCALE:-1}"
[[ "$scale" =~ ^[0-9]*\.?[0-9]+$ || "$scale" == auto ]] || { echo "error: EFFICIENTCELLSEG_SCALE=$scale is not a number (e.g. 1.5) or auto" >&2; exit 2; }
seq="$3"; root="${4:-$here/..}"
input="$root/$folder/$seq"
[ -d "$input" ] || { echo "error: input folder $input does not exist (expected ROOT/${folder}/${seq})" >&2; exit 2; }
scheduler=()
[ -z "${EFFICIENTCELLSEG_SCHEDULER:-}" ] || scheduler=(--scheduler "$EFFICIENTCELLSEG_SCHEDULER")
py="$here/.venv/bin/python"
[ -x "$py" ] || py="$(command -v python3)" || { echo "error: no Python found; run ./test.sh or scripts/bootstrap.sh first" >&2; exit 2; }
calibrate=()
[ -z "${EFFICIENTCELLSEG_CALIBRATE:-}" ] || calibrate=(--calibrate "$EFFICIENTCELLSEG_CALIBRATE")
exec "$py" -m efficientcellseg predict --dataset "$dataset" --input "$input" --output "${input}_RES" --device auto \
  --precision "$precision" --scale "$scale" ${calibrate[@]+"${calibrate[@]}"} ${track_flag[@]+"${track_flag[@]}"} \
  ${denoise_flag[@]+"${denoise_flag[@]}"} ${adapt_flag[@]+"${adapt_flag[@]}"} \
  ${scheduler[@]+"${scheduler[@]}"}
