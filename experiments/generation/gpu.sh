#!/usr/bin/env bash
# Larger generators on a GPU (one call of the project's device machine: <= 9 minutes, $OUT <= 16 MiB a file).
# The machine cannot read ../shared/data: carry the prepared 128 x 128 training sets (prepare_sets.py output,
# runs/gen/sets/<domain>/train, a few tens of MB) with the call. Each model trains for MINUTES minutes in bf16
# with a larger batch and UNet, then its EMA weights, config and log are copied to $OUT.
#
#   experiments/generation/gpu.sh mri "vq gan" 3        # DOMAIN, MODELS (gan pixel vq vae), MINUTES per model
#
# The latent models need their autoencoder carried: runs/gen/mri_vae_f4 and runs/gen/<domain>_vqvae_f4
# (configs/generate_<domain>_vqvae_f4.yaml); the histology VAE-DDPM uses the shipped histology-x4 (in the tree).
set -euo pipefail
DOMAIN=${1:?usage: gpu.sh mri|histology MODELS MINUTES}; MODELS=${2:-"vq gan"}; MINUTES=${3:-3}
SETS=runs/gen/sets/$DOMAIN/train
OUT=${OUT:-runs/gen/gpu_out}
[[ -d $SETS ]] || { echo "error: $SETS: carry the prepared training set (prepare_sets.py)" >&2; exit 2; }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
for model in $MODELS; do
  cfg=configs/generate_${DOMAIN}_${model}.yaml
  run=runs/gen/gpu/${DOMAIN}_${model}
  big=(generate.unet=small)
  [[ $model == gan ]] && big=(generate.gan_features=64)
  ldsr train generate -c "$cfg" -o "$run" data.train="[$SETS]" data.split=all data.split_rules="[]" data.resize=0 \
    train.precision=bf16 train.batch_size=64 train.steps=1000000 train.max_minutes="$MINUTES" \
    train.ckpt_every=0 train.log_every=100 data.num_workers=8 "${big[@]}"
  last=$(ls -d "$run"/checkpoints/step_* | tail -1)
  mkdir -p "$OUT/${DOMAIN}_${model}"
  cp "$last/ema.safetensors" "$last/config.json" "$run/log.csv" "$OUT/${DOMAIN}_${model}/"
  ldsr generate -m "$last" -n 64 -o "$OUT/${DOMAIN}_${model}/samples" --device cuda -q
done
ls -la "$OUT"/*
