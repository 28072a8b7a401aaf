#!/usr/bin/env bash
# Segment sequence SEQ of Fluo-C3DL-MDA231: ./run_MDA231.sh SEQ [ROOT]  -> ROOT/Fluo-C3DL-MDA231/SEQ_RES (ROOT defaults to ..)
set -euo pipefail
exec "$(dirname "${BASH_SOURCE[0]}")/scripts/ctc_run.sh" MDA231 Fluo-C3DL-MDA231 "$@"
