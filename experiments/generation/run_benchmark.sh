#!/usr/bin/env bash
# The generation benchmark of docs/BENCHMARKS.md for one domain (issue 16): GAN, pixel DDPM, VAE-DDPM and VQ-DDPM
# trained on the same training split, sampled, and measured against the held-out split.
#
#   experiments/generation/run_benchmark.sh mri        # or: histology
#
# Environment: STEPS (optimizer steps per model, default 20000), PREC (train.precision: no | bf16, default no),
# N (samples per model, default 500), N_DDPM (samples of the 1000-step DDPM runs, default 64), MINUTES (time
# budget per training call, 0 = none), BATCH (train.batch_size, default the config's). Re-running skips the
# trained runs (their checkpoints exist) and continues unfinished ones with --resume.
set -euo pipefail
DOMAIN=${1:?usage: run_benchmark.sh mri|histology}
STEPS=${STEPS:-20000}; PREC=${PREC:-no}; N=${N:-500}; N_DDPM=${N_DDPM:-64}; MINUTES=${MINUTES:-0}
ROOT=runs/gen; SETS=$ROOT/sets/$DOMAIN; FEAT=$ROOT/features/ldsr-feat-$DOMAIN-v1.safetensors
EXTRA=(train.steps="$STEPS" train.precision="$PREC" train.max_minutes="$MINUTES")
[[ -n "${BATCH:-}" ]] && EXTRA+=(train.batch_size="$BATCH")

if [[ $DOMAIN == mri ]]; then
  DATA=(--data ../shared/data/mri/brain-tumor-figshare --split-rules experiments/splits/figshare.yaml --channels 1)
  RESIZE=128
else
  DATA=(--data ../shared/data/histology/cmu1-small-region/tiles150 ../shared/data/histology/kather2016
        --split-rules experiments/splits/cmu1.yaml experiments/splits/kather2016.yaml --channels 3)
  RESIZE=150
fi

# 1. the image sets (training split for memorisation, held-out split for the distances) and the feature network
[[ -d $SETS/test ]] || python experiments/generation/prepare_sets.py "${DATA[@]}" --size 128 --resize $RESIZE --out "$SETS"
[[ -f $FEAT ]] || python experiments/generation/train_features.py --images "$SETS/train" --name "ldsr-feat-$DOMAIN" \
  --version 1 --steps "${FEAT_STEPS:-3000}" --out "$FEAT"

train() {  # train CONFIG TASK [overrides...]: fresh, or --resume when the run has checkpoints
  local cfg=$1 task=$2; shift 2
  local dir; dir=$(ldsr train "$task" -c "$cfg" --dry-run "$@" | awk '/^  run_dir:/{print $2}')
  if [[ -d $dir/checkpoints ]]; then ldsr train "$task" -c "$cfg" --resume "$@"; else ldsr train "$task" -c "$cfg" "$@"; fi
}

# 2. the autoencoders the latent models need beyond the shipped SR models' ones
if [[ $DOMAIN == mri ]]; then
  train configs/generate_mri_vae_f4.yaml autoencoder train.precision="$PREC" train.max_minutes="$MINUTES"
else
  train configs/vqvae_f4_rgb.yaml autoencoder train.precision="$PREC" train.max_minutes="$MINUTES"
fi

# 3. the four generators, their samples (DPM-Solver++ 50 steps; the diffusion models also 1000-step DDPM) and measures
for model in gan pixel vae vq; do
  cfg=configs/generate_${DOMAIN}_${model}.yaml
  train "$cfg" generate "${EXTRA[@]}"
  run=$ROOT/${DOMAIN}_${model}
  ldsr generate -m "$run" -n "$N" -o "$ROOT/samples/${DOMAIN}_${model}" --sampler dpmpp --steps 50 --seed 0 -q
  ldsr evaluate-generation --real "$SETS/test" --fake "$ROOT/samples/${DOMAIN}_${model}" --train "$SETS/train" \
    --features "$FEAT" --out "$ROOT/eval/${DOMAIN}_${model}"
  if [[ $model != gan ]]; then
    ldsr generate -m "$run" -n "$N_DDPM" -o "$ROOT/samples/${DOMAIN}_${model}_ddpm" --sampler ddpm --seed 0 -q
    ldsr evaluate-generation --real "$SETS/test" --fake "$ROOT/samples/${DOMAIN}_${model}_ddpm" \
      --train "$SETS/train" --features "$FEAT" --out "$ROOT/eval/${DOMAIN}_${model}_ddpm"
  fi
done
python experiments/generation/table.py "$ROOT"/eval/"${DOMAIN}"_*/generation.json
