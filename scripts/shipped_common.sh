# Shared by the scripts/train_*.sh and scripts/finetune_shipped_models.sh training scripts (sourced, not run).
# Defines root, py, data (training sequences, seeds 101-106), tune_data (seeds 150-152) and:
#   mins M                 M minutes times the caller's $scale (MINUTES_SCALE argument)
#   gen OUT PROFILE SEQ SEED FRAMES [SYNTH FLAGS...]   generate a synthetic sequence (deterministic for the seed)
#   randomized_training_data DIR DATASET   fixed-profile (seeds 101-106) + domain-randomized (seeds 1011-1058)
#                          training sequences of issue #14 under DIR; sequences already there are kept
#   install_model WORK NAME      copy a trained model folder WORK/NAME into models/NAME
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="$root/.venv/bin/python"
data="$root/runs/train_data"
tune_data="$root/runs/tune"
mkdir -p "$data"
mins() { awk -v m="$1" -v s="${scale:-1.0}" 'BEGIN { printf "%.1f", m * s }'; }
gen() {
  local out="$1" profile="$2" seq="$3" seed="$4" frames="$5"
  shift 5
  "$py" -m efficientcellseg synth --out "$out" --profile "$profile" --seq "$seq" --seed "$seed" \
    --frames "$frames" "$@" -q
}
_have_seq() { [ -f "$1/$2/$3/t000.tif" ]; }  # DIR CTC-FOLDER SEQ
randomized_training_data() {  # DIR DATASET: the issue #14 training set, sequences already there are kept
  local d="$1" i
  case "$2" in
    A549-SIM)
      _have_seq "$d" Fluo-C3DH-A549-SIM 01 || gen "$d" A549-SIM 01 105 15
      _have_seq "$d" Fluo-C3DH-A549-SIM 02 || gen "$d" A549-SIM 02 106 15
      for i in 1 2 3 4 5 6 7 8; do
        _have_seq "$d" Fluo-C3DH-A549-SIM "1$i" || gen "$d" A549-SIM "1$i" "101$i" 8 --randomize
      done ;;
    TRIC)
      _have_seq "$d" Fluo-N3DL-TRIC 01 || gen "$d" TRIC 01 103 8 --small
      _have_seq "$d" Fluo-N3DL-TRIC 02 || gen "$d" TRIC 02 104 8 --small
      for i in 1 2 3 4 5 6; do
        _have_seq "$d" Fluo-N3DL-TRIC "1$i" || gen "$d" TRIC "1$i" "103$i" 4 --small --randomize
      done ;;
    MDA231)
      for i in 1 2 3; do _have_seq "$d" Fluo-C3DL-MDA231 "0$i" || gen "$d" MDA231 "0$i" "10$i" 24; done
      for i in 1 2 3 4 5 6 7 8; do
        _have_seq "$d" Fluo-C3DL-MDA231 "1$i" || gen "$d" MDA231 "1$i" "105$i" 8 --randomize
      done ;;
    *) echo "randomized_training_data: unknown dataset $2 (MDA231, TRIC or A549-SIM)" >&2; return 2 ;;
  esac
}
install_model() {
  mkdir -p "$root/models/$2"
  for f in config.json thresholds.json weights.safetensors SHA256SUMS MODEL_CARD.md; do
    cp "$1/$2/$f" "$root/models/$2/$f"
  done
}
