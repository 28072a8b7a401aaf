# Shared by scripts/train_shipped_models.sh and scripts/finetune_shipped_models.sh (sourced, not run).
# Defines root, py, data (training sequences, seeds 101-106), tune_data (seeds 150-152) and:
#   mins M                 M minutes times the caller's $scale (MINUTES_SCALE argument)
#   gen OUT PROFILE SEQ SEED FRAMES [--small]   generate a synthetic sequence (deterministic for the seed)
#   install_model WORK NAME      copy a trained model folder WORK/NAME into models/NAME
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="$root/.venv/bin/python"
data="$root/runs/train_data"
tune_data="$root/runs/tune"
mkdir -p "$data"
mins() { awk -v m="$1" -v s="${scale:-1.0}" 'BEGIN { printf "%.1f", m * s }'; }
gen() {
  "$py" -m efficientcellseg synth --out "$1" --profile "$2" --seq "$3" --seed "$4" --frames "$5" ${6:-} -q
}
install_model() {
  mkdir -p "$root/models/$2"
  for f in config.json thresholds.json weights.safetensors SHA256SUMS MODEL_CARD.md; do
    cp "$1/$2/$f" "$root/models/$2/$f"
  done
}
