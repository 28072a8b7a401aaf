# Sourced (not run) by the scripts for a lent GPU machine: benchmarks/gpu_check.sh and scripts/gpu_train_batch.sh.
# Defines root and py and sets PYTHONPATH so that `"$py" -m efficientcellseg` works on that machine.
#
# The machine is bare and offline: its python3 holds PyTorch and most of the field's packages, but not
# segmentation-models-pytorch, and its timm may be another version than ours (the model's layer names come from
# it). Both travel as wheels in $DEVICE_WHEELS (default .whl/, ignored by git; scripts/device_wheels.sh
# downloads them here) and are installed without dependencies and without the network into a private folder
# placed first on PYTHONPATH. Where this checkout has .venv (this machine, CI), .venv is used and nothing is
# installed.
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="$root/.venv/bin/python"
if [ ! -x "$py" ]; then
  py="$(command -v python3)" || { echo "error: no .venv and no python3 on PATH; run scripts/bootstrap.sh" >&2; exit 2; }
  wheels="${DEVICE_WHEELS:-$root/.whl}"
  if compgen -G "$wheels/*.whl" > /dev/null; then
    site="${TMPDIR:-/tmp}/efficientcellseg-site"
    "$py" -m pip install -q --disable-pip-version-check --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$site" "$wheels"/*.whl \
      || { echo "error: could not install the wheels in $wheels; run scripts/device_wheels.sh again" >&2; exit 2; }
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
  else
    echo "warning: no wheels in $wheels (scripts/device_wheels.sh makes them); using $py as it is" >&2
  fi
fi
export PYTHONPATH="$root/SW:$root${PYTHONPATH:+:$PYTHONPATH}"
