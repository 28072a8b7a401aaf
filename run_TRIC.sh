#!/usr/bin/env bash
# Segment sequence SEQ of Fluo-N3DL-TRIC: ./run_TRIC.sh SEQ [ROOT]  -> ROOT/Fluo-N3DL-TRIC/SEQ_RES (ROOT defaults to ..)
set -euo pipefail
exec "$(dirname "${BASH_SOURCE[0]}")/scripts/ctc_run.sh" TRIC Fluo-N3DL-TRIC "$@"
