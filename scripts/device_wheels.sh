#!/usr/bin/env bash
# Downloads, on this machine (package registry needed), the wheels that the lent GPU machine lacks into .whl/
# (ignored by git): segmentation-models-pytorch and timm at the versions of requirements.txt, pure Python, no
# dependencies (that machine has the rest). scripts/device_env.sh installs them there. Carry `.whl` in the call.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="$root/.venv/bin/python"
[ -x "$py" ] || py="$(command -v python3)"
pins=()
for name in segmentation-models-pytorch timm; do
  pin="$(grep -iE "^${name}==" "$root/requirements.txt")" || { echo "error: $name is not pinned in requirements.txt" >&2; exit 2; }
  pins+=("$pin")
done
mkdir -p "$root/.whl"
"$py" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux2014_x86_64 -d "$root/.whl" "${pins[@]}"
ls -l "$root/.whl"
