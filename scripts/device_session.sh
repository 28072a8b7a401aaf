#!/usr/bin/env bash
# Everything a session with a lent GPU machine runs, as one device call of about 9 minutes (the device time of a
# session is 15 minutes, machine start included): the GPU check (benchmarks/gpu_check.sh, CHECK_BUDGET seconds,
# default 200) into $OUT/check, then the training batch (scripts/gpu_train_batch.sh, TRAIN_MINUTES per network,
# default 4; TRAIN_DATASETS, default all three) into $OUT/train. One failing does not stop the other. Here,
# first: scripts/device_wheels.sh. Then
#   run(command="scripts/device_session.sh", carry=[".whl"], timeout_s=590)
# and read gpu_check.md / gpu_train.json from the files that come back (at most 8 files: the limit).
# DEVICE_DRY_RUN=1: both steps in their tiny CPU dry runs (the test suite runs it with TRAIN_DATASETS=A549-SIM).
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${OUT:-$root/runs/device}"
dry=()
[ "${DEVICE_DRY_RUN:-0}" = 1 ] && dry=(--dry-run)
# shellcheck disable=SC2086  # TRAIN_DATASETS is a word list
OUT="$out/check" bash "$root/benchmarks/gpu_check.sh" "${dry[@]}" --budget "${CHECK_BUDGET:-200}"
check=$?
OUT="$out/train" bash "$root/scripts/gpu_train_batch.sh" "${dry[@]}" --minutes "${TRAIN_MINUTES:-4}" ${TRAIN_DATASETS:-}
train=$?
echo "gpu_check exit $check, gpu_train_batch exit $train" >&2
[ "$check" = 0 ] && [ "$train" = 0 ]
