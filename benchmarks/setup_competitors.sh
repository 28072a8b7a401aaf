#!/usr/bin/env bash
# Create .bench-venv (git-ignored) holding the networks users would pick instead of EfficientCellSeg, with the
# same torch as .venv: Cellpose 3 (CPnet) and nnU-Net's architectures (PlainConvUNet). benchmarks/speed.py times
# them with random weights when this venv exists. Usage: benchmarks/setup_competitors.sh  (never touches .venv)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.bench-venv"
py="${PYTHON:-python3}"
[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check \
  torch==2.14.1 torchvision==0.29.1 "cellpose>=3,<4" dynamic-network-architectures==0.4.4
"$venv/bin/python" -c "import cellpose.resnet_torch, dynamic_network_architectures; print('competitors installed in $venv')"
