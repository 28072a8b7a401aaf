#!/usr/bin/env bash
# GPU check for a lent GPU machine, in one call (<= 8 min): correctness vs CPU fp32, network/end-to-end speed,
# training throughput; JSON + a Markdown section for benchmarks/RESULTS.md under $OUT (default runs/gpu_check).
# Usage: benchmarks/gpu_check.sh [--dry-run] [--budget S] [--frames N]
# No internet there: with a wheel folder (GPU_CHECK_WHEELS, default .whl/) what is missing is installed from it
# (pip --no-index --find-links); otherwise the Python found (.venv, else python3) is used as it is.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
wheels="${GPU_CHECK_WHEELS:-$root/.whl}"
py="$root/.venv/bin/python"
[ -x "$py" ] || py="$(command -v python3)" || { echo "error: no Python found" >&2; exit 2; }
if compgen -G "$wheels/*.whl" > /dev/null; then
  "$py" -m pip install -q --disable-pip-version-check --no-index --find-links "$wheels" -r "$root/requirements.txt" \
    || echo "warning: could not install every requirement from $wheels; using what is present" >&2
fi
export PYTHONPATH="$root/SW:$root${PYTHONPATH:+:$PYTHONPATH}"
export OUT="${OUT:-$root/runs/gpu_check}"
exec timeout 470 "$py" "$root/benchmarks/gpu_check.py" --out "$OUT" "$@"
