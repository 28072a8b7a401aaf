#!/usr/bin/env bash
# GPU check for a lent GPU machine, in one call (<= 8 min): correctness vs CPU fp32, network/end-to-end speed,
# training throughput; JSON + a Markdown section for benchmarks/RESULTS.md under $OUT (default runs/gpu_check).
# Usage: benchmarks/gpu_check.sh [--dry-run] [--budget S] [--frames N]
# No internet there: the packages it lacks travel as wheels in .whl/ (scripts/device_wheels.sh; carry `.whl`),
# installed by scripts/device_env.sh; here .venv is used as it is.
set -euo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/scripts/device_env.sh"
export OUT="${OUT:-$root/runs/gpu_check}"
exec timeout 470 "$py" "$root/benchmarks/gpu_check.py" --out "$OUT" "$@"
