#!/usr/bin/env bash
# Create .venv in the repository root when it is missing and install the package into it.
# Idempotent: a second call with an up-to-date .venv does nothing but a quick check.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
stamp="$venv/.efficientcellseg-installed"
want="$(cat "$root/requirements.txt" "$root/pyproject.toml" | sha256sum | cut -c1-16)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
py="${PYTHON:-python3}"
command -v "$py" >/dev/null || { echo "bootstrap: $py not found; install Python >= 3.10" >&2; exit 1; }
if [ ! -x "$venv/bin/python" ]; then
  echo "bootstrap: creating $venv" >&2
  "$py" -m venv "$venv"
fi
echo "bootstrap: installing requirements into $venv (first time: a few minutes)" >&2
"$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$root/requirements.txt"
"$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e "$root"
echo "$want" > "$stamp"
