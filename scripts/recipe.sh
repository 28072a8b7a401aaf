# The input recipe of each dataset's network training, shared by scripts/train_denoised_models.sh (CPU) and
# scripts/gpu_train_batch.sh (GPU) so the two cannot drift apart. Sourced, not run; it only defines a function
# (no paths, no folders, no interpreter), so the device script can source it too.
#   recipe_flags DATASET   prints the train flags: noise-adaptive smoothing target (the noise ratio of the
#                          fixed-profile training frames: MDA231 0.055, TRIC 0.026 after its 8 px top-hat,
#                          A549-SIM 0.027), TRIC's top-hat radius and constant learning rate, and the crop
recipe_flags() {
  case "$1" in
    MDA231) echo "--denoise-target 0.055 --crop 160" ;;
    TRIC) echo "--denoise-target 0.026 --background-radius 8 --crop 128 --lr-patience 1000" ;;
    A549-SIM) echo "--denoise-target 0.027 --crop 192" ;;
    *) echo "recipe_flags: unknown dataset $1 (MDA231, TRIC or A549-SIM)" >&2; return 2 ;;
  esac
}

# shipped_recipe_flags DATASET   prints the input flags of the shipped network's LAST training, which a GPU run
#                          continues (scripts/gpu_train_batch.sh; tests/test_device_scripts.py checks them against
#                          the shipped folders): MDA231-seg (2026-12-05, eighth session) smoothing to 0.04 with
#                          frames up to 0.08 left alone (its 99.9 ceiling, 2026-12-08, is an inference setting
#                          added after training and kept by blend; as a teacher it is run on this input);
#                          TRIC-seg (ninth session) the raw input, whose folder gets the shipped top-hat and smoothing from `efficientcellseg blend models/TRIC-seg
#                          TUNED --alpha 1` on return, as the shipped one did; A549-SIM-seg as recipe_flags.
shipped_recipe_flags() {
  case "$1" in
    MDA231) echo "--denoise-target 0.04 --denoise-min-ratio 0.08 --crop 160" ;;
    TRIC) echo "--crop 128 --lr-patience 1000" ;;
    A549-SIM) echo "--denoise-target 0.027 --crop 192" ;;
    *) echo "shipped_recipe_flags: unknown dataset $1 (MDA231, TRIC or A549-SIM)" >&2; return 2 ;;
  esac
}
