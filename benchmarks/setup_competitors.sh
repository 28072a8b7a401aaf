#!/usr/bin/env bash
# Create .bench-venv (git-ignored) holding the networks users would pick instead of EfficientCellSeg: Cellpose 3
# (CPnet) and nnU-Net's architectures (PlainConvUNet). It reuses the torch of .venv through a .pth file (same torch
# by construction, nothing large downloaded) and installs only the two packages and their small pure-Python
# dependencies. benchmarks/speed.py times them with random weights when this venv exists.
# Usage: benchmarks/setup_competitors.sh  (never modifies .venv; needs .venv, e.g. from scripts/bootstrap.sh)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.bench-venv"
[ -x "$root/.venv/bin/python" ] || { echo "error: $root/.venv is missing; run scripts/bootstrap.sh first" >&2; exit 2; }
base="$("$root/.venv/bin/python" -c 'import sys; print(sys.base_prefix)')/bin/python3"
site="$("$root/.venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
[ -x "$venv/bin/python" ] || "$base" -m venv "$venv"
"$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' | {
  read -r own; echo "$site" > "$own/zz_efficientcellseg_venv.pth"; }
"$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps \
  "cellpose>=3,<4" dynamic-network-architectures==0.4.4 natsort fastremap roifile
"$venv/bin/python" -c "import torch, cellpose.resnet_torch, dynamic_network_architectures; print('competitors installed in $venv (torch', torch.__version__ + ')')"
