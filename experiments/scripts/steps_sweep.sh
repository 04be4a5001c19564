#!/usr/bin/env bash
# Fast sampling vs quality: one model on the first 20 pairs of a held-out pair folder (an `ldsr degrade` output),
# DPM-Solver++ at 1/2/5/10/20/50/100/1000 steps and ancestral DDPM over the whole chain, one draw per image; then
# the mean of DRAWS (default 8) draws at 1-100 steps; then a table and a plot. One step lands on the network's
# x0 estimate at the start of the chain, E[x0 | LR] (Tweedie): the posterior mean in one evaluation.
#   bash experiments/scripts/steps_sweep.sh MODEL [PAIRS] [OUT]
#   bash experiments/scripts/steps_sweep.sh models/mri-x4 runs/cpu/eval_mri/pairs_bsrgan runs/cpu/steps_sweep/mri-x4
set -euo pipefail
cd "$(dirname "$0")/../.."
model=${1:?usage: $0 MODEL [PAIRS] [OUT]}
pairs=${2:-runs/cpu/eval_mri/pairs}
out=${3:-runs/cpu/steps_sweep/$(basename "$model")}
scale=${SCALE:-4}
export OMP_NUM_THREADS=1
ev() { .venv/bin/ldsr evaluate --gt $pairs/hr --lr $pairs/lr --scale $scale --limit 20 --model "$model" --heatmaps 0 "$@"; }
for s in 1 2 5 10 20 50 100 1000; do
  ev --sampler dpmpp --steps $s --draws 1 --out "$out/dpmpp_$s"
done
ev --sampler ddpm --draws 1 --out "$out/ddpm_full"
draws=${DRAWS:-8}
for s in 1 10 20 50 100; do
  ev --sampler dpmpp --steps $s --draws $draws --out "$out/dpmpp_${s}_draws$draws"
done
.venv/bin/python experiments/scripts/plot_steps_sweep.py "$out"
