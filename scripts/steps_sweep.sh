#!/usr/bin/env bash
# Fast sampling vs quality: one latent model on the first 20 held-out MRI pairs of the CPU suite, DPM-Solver++
# at 10/20/50/100 steps and ancestral DDPM over the whole chain. Run after `cpu_mri_suite.sh eval` made the pairs.
#   bash scripts/steps_sweep.sh runs/cpu/ldm_sr_x4_vae_v
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:?usage: $0 MODEL}
pairs=runs/cpu/eval_mri/pairs
out=runs/cpu/steps_sweep/$(basename "$model")
export OMP_NUM_THREADS=1
for s in 10 20 50 100; do
  .venv/bin/ldsr evaluate --gt $pairs/hr --lr $pairs/lr --scale 4 --limit 20 --model "$model" \
    --sampler dpmpp --steps $s --heatmaps 0 --out "$out/dpmpp_$s"
done
.venv/bin/ldsr evaluate --gt $pairs/hr --lr $pairs/lr --scale 4 --limit 20 --model "$model" \
  --sampler ddpm --heatmaps 0 --out "$out/ddpm_full"
