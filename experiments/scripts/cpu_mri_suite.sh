#!/usr/bin/env bash
# The CPU benchmark suite on brain MRI (docs/BENCHMARKS.md): trains every model of experiments/configs/cpu/ on the
# figshare train split and evaluates them on held-out slices. Needs ../shared/data (see its README).
# Each training job uses one torch thread; run two jobs at once on a 2-core machine.
#   bash experiments/scripts/cpu_mri_suite.sh train   # ~1 h on a 2-core CPU
#   bash experiments/scripts/cpu_mri_suite.sh eval    # the comparison table and figures in runs/cpu/eval_mri/
set -euo pipefail
cd "$(dirname "$0")/../.."
L=.venv/bin/ldsr
export OMP_NUM_THREADS=1

train() {
  $L train baseline -c experiments/configs/cpu/srcnn_x4.yaml
  $L train baseline -c experiments/configs/cpu/fsrcnn_x4.yaml
  # The VQ-VAE was trained for 1500 steps, then resumed to 6000 (the cosine LR schedule restarts over 6000).
  $L train autoencoder -c experiments/configs/cpu/vqvae_f4.yaml
  $L train autoencoder -c experiments/configs/cpu/vqvae_f4.yaml --resume train.steps=6000 train.ckpt_every=1500 train.val_every=1500
  $L train autoencoder -c experiments/configs/cpu/vae_f4.yaml
  $L train sr -c experiments/configs/cpu/ldm_sr_x4.yaml
  $L train sr -c experiments/configs/cpu/ldm_sr_x4_vae.yaml
  $L train sr -c experiments/configs/cpu/ldm_sr_x4_v.yaml        # the same with v-prediction
  $L train sr -c experiments/configs/cpu/ldm_sr_x4_vae_v.yaml
  $L train sr -c experiments/configs/cpu/sr3_x4.yaml
  $L train baseline -c experiments/configs/cpu/esrgan_x4.yaml
  $L train baseline -c experiments/configs/cpu/esrgan_x4_gan.yaml   # stage 2: RaGAN + L1 from the L1-stage generator
  $L train baseline -c experiments/configs/cpu/esrgan_x4_gan_l1.yaml   # the same with the L1 term at weight 1
  # Residual diffusion (SRDiff-style) on the same bicubic protocol: the models that beat the baselines.
  $L train sr -c experiments/configs/cpu/ldm_sr_x4_res_bicubic.yaml
  $L train sr -c experiments/configs/cpu/ldm_sr_x4_vae_res_bicubic.yaml
  $L train sr -c experiments/configs/cpu/sr3_x4_res_bicubic.yaml
}

evaluate() {
  local out=runs/cpu/eval_mri
  rm -rf "$out/gt_full"
  mkdir -p "$out/gt_full"
  # 50 held-out slices (docs/DATA_SPLITS.md), evenly spaced over the sorted held-out list.
  .venv/bin/python - "$out/gt_full" <<'PY'
import shutil, sys
import numpy as np
from ldsr.data.datasets import list_sources
src = list_sources(["../shared/data/mri/brain-tumor-figshare"], "test")
for i in np.linspace(0, len(src) - 1, 50).round().astype(int):
    p = src[i].path
    shutil.copy(p, f"{sys.argv[1]}/{p.parent.name}_{p.name}")
PY
  $L degrade "$out/gt_full" "$out/pairs" --scale 4 --preset bicubic --seed 0 --hr-size 128
  .venv/bin/python experiments/scripts/eval_autoencoder.py --data ../shared/data/mri/brain-tumor-figshare --count 50 \
    --json "$out/autoencoders.json" runs/cpu/vqvae_f4 runs/cpu/vae_f4
  $L evaluate --gt "$out/pairs/hr" --lr "$out/pairs/lr" --scale 4 --out "$out/report" \
    --model bicubic --model runs/cpu/srcnn_x4 --model runs/cpu/fsrcnn_x4 --model runs/cpu/esrgan_x4 \
    --model runs/cpu/sr3_x4 --model runs/cpu/ldm_sr_x4_vae --model runs/cpu/ldm_sr_x4 \
    --model runs/cpu/ldm_sr_x4_vae_v --model runs/cpu/ldm_sr_x4_v \
    --sampler dpmpp --steps 20
  $L evaluate --gt "$out/pairs/hr" --lr "$out/pairs/lr" --scale 4 --out "$out/report_bicubic_res" \
    --model bicubic --model runs/cpu/srcnn_x4 --model runs/cpu/esrgan_x4 --model runs/cpu/sr3_x4_res_bicubic \
    --model runs/cpu/ldm_sr_x4_vae_res_bicubic --model runs/cpu/ldm_sr_x4_res_bicubic --sampler dpmpp --steps 10 --draws 8
}

# Histology (3 channels): CNN baselines, ESRGAN (L1 stage) and a VAE-DDPM with v-prediction.
histology() {
  local out=runs/cpu/eval_histo
  $L train baseline -c experiments/configs/cpu/srcnn_x4_rgb.yaml
  $L train baseline -c experiments/configs/cpu/fsrcnn_x4_rgb.yaml
  $L train baseline -c experiments/configs/cpu/esrgan_x4_rgb.yaml
  $L train autoencoder -c experiments/configs/cpu/vae_f4_rgb.yaml
  $L train sr -c experiments/configs/cpu/ldm_sr_x4_vae_v_rgb.yaml
  $L train sr -c experiments/configs/cpu/ldm_sr_x4_vae_res_rgb.yaml
  $L train autoencoder -c experiments/configs/cpu/vqvae_f4_rgb.yaml
  $L train sr -c experiments/configs/cpu/ldm_sr_x4_vq_res_rgb.yaml
  $L train sr -c experiments/configs/cpu/sr3_x4_res_rgb.yaml
  rm -rf "$out/gt" && mkdir -p "$out/gt"
  .venv/bin/python - "$out/gt" <<'PY'
import shutil, sys
from ldsr.data.datasets import list_sources
for s in list_sources(["../shared/data/histology/cmu1-small-region/tiles150"], "test"):
    shutil.copy(s.path, sys.argv[1])
PY
  $L evaluate --gt "$out/gt" --preset bicubic --seed 0 --scale 4 --out "$out/report" \
    --model bicubic --model runs/cpu/srcnn_x4_rgb --model runs/cpu/fsrcnn_x4_rgb \
    --model runs/cpu/esrgan_x4_rgb --model runs/cpu/ldm_sr_x4_vae_v_rgb --sampler dpmpp --steps 20
  # The comparison (residual diffusion: SR3, VAE-DDPM, VQVAE-DDPM) in one run per sampling: the default (posterior
  # mean, 1 step), then the mean of 8 ten-step draws.
  for m in "1 1" "10 8"; do
    set -- $m
    $L evaluate --gt "$out/gt" --preset bicubic --seed 0 --scale 4 --out "$out/report_all_${1}x$2" \
      --model bicubic --model runs/cpu/srcnn_x4_rgb --model runs/cpu/fsrcnn_x4_rgb --model runs/cpu/esrgan_x4_rgb \
      --model runs/cpu/sr3_x4_res_rgb --model runs/cpu/ldm_sr_x4_vae_res_rgb --model runs/cpu/ldm_sr_x4_vq_res_rgb \
      --sampler dpmpp --steps $1 --draws $2
  done
}

case "${1:-}" in
  train) train ;;
  eval) evaluate ;;
  histology) histology ;;
  *) echo "usage: $0 train|eval|histology" >&2; exit 2 ;;
esac
