#!/usr/bin/env bash
# Segment sequence SEQ of Fluo-C3DH-A549-SIM: ./run_A549-SIM.sh SEQ [ROOT]  -> ROOT/Fluo-C3DH-A549-SIM/SEQ_RES (ROOT defaults to ..)
set -euo pipefail
exec "$(dirname "${BASH_SOURCE[0]}")/scripts/ctc_run.sh" A549-SIM Fluo-C3DH-A549-SIM "$@"
