#!/usr/bin/env bash
# TRA/DET of the shipped models on family B time-lapses (default and dim), run scripts with EFFICIENTCELLSEG_TRACK=1.
# Usage: benchmarks/tracking_family_b.sh [WORK_DIR]   (results in benchmarks/RESULTS.md, "Tracking on family B")
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
py=.venv/bin/python
w="${1:-runs/tra_b}"
mkdir -p $w
for cond in default dim; do
  $py -m efficientcellseg synth -q --family b --condition $cond --profile MDA231 --out $w/$cond --seed 321 --frames 8
  $py -m efficientcellseg synth -q --family b --condition $cond --profile TRIC --small --out $w/$cond --seed 322 --frames 5
  for ds in MDA231:Fluo-C3DL-MDA231 TRIC:Fluo-N3DL-TRIC; do
    key=${ds%%:*}; folder=${ds##*:}
    EFFICIENTCELLSEG_TRACK=1 ./run_$key.sh 01 $w/$cond > $w/$cond-$key.run.log 2>&1
    echo "== $cond $key"
    $py -m evaluation.tra --check --gt $w/$cond/$folder/01_GT --res $w/$cond/$folder/01_RES 2>&1 | tail -3
    $py -m evaluation.tra --gt $w/$cond/$folder/01_GT --res $w/$cond/$folder/01_RES 2>&1 | tail -2
    $py -m evaluation.seg --gt $w/$cond/$folder/01_GT/SEG --res $w/$cond/$folder/01_RES 2>&1 | grep "^SEG"
    $py -c "
from ctc_metrics.scripts.validate import validate_sequence
print('py-ctcmetrics valid:', validate_sequence('$w/$cond/$folder/01_RES', threads=1))" 2>&1 | tail -1
  done
done
