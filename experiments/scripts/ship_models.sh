#!/usr/bin/env bash
# The shipped models (src/ldsr/assets/models/{mri-x4,histology-x4,histology-x8}) and their comparison tables, from ../shared/data.
# Every job uses one torch thread; run two at once on a 2-core machine (timings: docs/BENCHMARKS.md).
#   bash experiments/scripts/ship_models.sh train     # autoencoders (if absent), the three latent models and their baselines
#   bash experiments/scripts/ship_models.sh export    # src/ldsr/assets/models/<name>/: fp16 EMA weights, config, card
#   bash experiments/scripts/ship_models.sh eval      # held-out comparison tables (bsrgan and bicubic LR) and the steps sweep
set -euo pipefail
cd "$(dirname "$0")/../.."
L=.venv/bin/ldsr
PY=.venv/bin/python
export OMP_NUM_THREADS=1

train() {
  [ -d runs/cpu/vqvae_f4 ] || { $L train autoencoder -c experiments/configs/cpu/vqvae_f4.yaml;
    $L train autoencoder -c experiments/configs/cpu/vqvae_f4.yaml --resume train.steps=6000 train.ckpt_every=1500 train.val_every=1500; }
  [ -d runs/cpu/vae_f4 ] || $L train autoencoder -c experiments/configs/cpu/vae_f4.yaml
  $L train autoencoder -c experiments/configs/cpu/vae_f4_histo.yaml
  # MRI, bsrgan degradation: the shipped VQVAE-DDPM and everything it is compared with.
  $L train sr -c experiments/configs/cpu/mri_x4.yaml
  $L train sr -c experiments/configs/cpu/mri_x4_compact.yaml
  $L train sr -c experiments/configs/cpu/mri_x4_ft128.yaml          # the shipped mri-x4: the above, fine-tuned on 128-px crops
  $L train sr -c experiments/configs/cpu/ldm_sr_x4_vae_res.yaml
  $L train sr -c experiments/configs/cpu/sr3_x4_res.yaml
  $L train baseline -c experiments/configs/cpu/srcnn_x4_bsrgan.yaml
  $L train baseline -c experiments/configs/cpu/fsrcnn_x4_bsrgan.yaml
  $L train baseline -c experiments/configs/cpu/esrgan_x4_bsrgan.yaml
  # Histology (CMU-1 + Kather 2016), bsrgan.
  [ -d runs/cpu/vqvae_f4_histo ] || $L train autoencoder -c experiments/configs/cpu/vqvae_f4_histo.yaml
  $L train sr -c experiments/configs/cpu/ldm_sr_x4_vq_histo.yaml
  $L train sr -c experiments/configs/cpu/ldm_sr_x4_histo.yaml
  $L train sr -c experiments/configs/cpu/ldm_sr_x8_histo.yaml
  $L train sr -c experiments/configs/cpu/histology_x4_compact.yaml
  $L train sr -c experiments/configs/cpu/histology_x4_ft128.yaml    # the shipped histology-x4/x8: fine-tuned on 128-px crops
  $L train sr -c experiments/configs/cpu/histology_x8_ft128.yaml
  $L train sr -c experiments/configs/cpu/histology_x8_compact_from_x4.yaml  # compact UNet at x8 from histology-x4's weights,
  $L train sr -c experiments/configs/cpu/histology_x8_compact_long.yaml     # then 4000 steps more: the shipped histology-x8
  $L train sr -c experiments/configs/cpu/histology_x8_rot90.yaml            # + 90-degree rotations: a probe, not shipped
  $L train baseline -c experiments/configs/cpu/srcnn_x4_histo.yaml
  $L train baseline -c experiments/configs/cpu/srcnn_x8_histo.yaml
  $L train baseline -c experiments/configs/cpu/fsrcnn_x4_histo.yaml
  $L train baseline -c experiments/configs/cpu/esrgan_x4_histo.yaml
  $L train baseline -c experiments/configs/cpu/fsrcnn_x8_histo.yaml
  $L train baseline -c experiments/configs/cpu/esrgan_x8_histo.yaml
  $L train sr -c experiments/configs/cpu/sr3_x4_res_histo.yaml
  $L train sr -c experiments/configs/cpu/sr3_x4_res_histo_long.yaml  # the same SR3 with 2000 more steps (a side row)
}

export_models() {
  # mri-x4: fine-tuned on 128-px crops, kept over the 64-px run on the Colin27 validation slices. histology-x4:
  # fine-tuned on 128-px crops as the issue specifies (decided before its evaluation). histology-x8: the compact
  # UNet from histology-x4 trained 6000 steps at x8, kept over the tiny-UNet histology_x8_ft128 by the rule
  # "highest validation SSIM, validation PSNR not lower" on the histology validation windows, decided before its
  # test evaluation. Sampler defaults: one DPM-Solver++ step (the network's x0 estimate at the start of the chain,
  # E[x0 | LR] by Tweedie, the posterior mean) averaged over 8 draws of x_T, chosen on the validation images by the
  # rule in docs/BENCHMARKS.md (written before those runs). The numbers behind these choices are in the summaries
  # that experiments/cards.yaml names; the cards are rendered from them (no number is typed here).
  $PY scripts/export_model.py runs/cpu/mri_x4_ft128 mri-x4 --default sampler=dpmpp --default steps=1 --default samples=8
  $PY scripts/export_model.py runs/cpu/histology_x4_ft128 histology-x4 --default sampler=dpmpp --default steps=1 \
    --default samples=8
  $PY scripts/export_model.py runs/cpu/histology_x8_compact_long histology-x8 --default sampler=dpmpp \
    --default steps=1 --default samples=8
  # After `eval`: copy each report's summary.json / summary.md named in experiments/cards.yaml to docs/figures/,
  # then render the cards from them.
  $PY experiments/render_cards.py
}

evaluate() {
  local mri=runs/cpu/eval_mri histo=runs/cpu/eval_histo
  # MRI: the 50 held-out slices of cpu_mri_suite.sh eval (run it first for $mri/gt_full), bsrgan LR.
  $L degrade $mri/gt_full $mri/pairs_bsrgan --scale 4 --preset bsrgan --seed 0 --hr-size 128
  # Validation (picks the sampler defaults; not the test split): Colin27 slices z >= 120, bsrgan LR.
  rm -rf $mri/val_colin && mkdir -p $mri/val_colin/gt
  for z in 120 123 126 129 132 135 138 141 144; do
    cp ../shared/data/mri/colin27/mricron_data_colin27_ch2_axial_z$z.png $mri/val_colin/gt/
  done
  $L degrade $mri/val_colin/gt $mri/val_colin/pairs --scale 4 --preset bsrgan --seed 0 --hr-size 128
  for m in "1 1" "10 8"; do  # 1 x 4 and 1 x 8 of mri-x4: the draws rule below
    set -- $m
    $L evaluate --gt $mri/val_colin/pairs/hr --lr $mri/val_colin/pairs/lr --scale 4 --out $mri/val_colin/report_${1}x$2 \
      --model bicubic --model runs/cpu/srcnn_x4_bsrgan --model runs/cpu/mri_x4_compact --model mri-x4 --sampler dpmpp --steps $1 --draws $2
  done
  # Test split, every diffusion model: the one-step posterior mean averaged over 8 draws (the shipped default) and
  # from one draw, the mean of 8 draws x 10 steps, and one 10-step draw.
  for m in "1 8 _1x8" "1 1 _mean" "10 8 "; do
    set -- $m
    $L evaluate --gt $mri/pairs_bsrgan/hr --lr $mri/pairs_bsrgan/lr --scale 4 --out $mri/report_bsrgan${3:-} \
      --model bicubic --model runs/cpu/srcnn_x4_bsrgan --model runs/cpu/fsrcnn_x4_bsrgan \
      --model runs/cpu/esrgan_x4_bsrgan --model runs/cpu/sr3_x4_res --model runs/cpu/ldm_sr_x4_vae_res \
      --model runs/cpu/mri_x4 --model runs/cpu/mri_x4_compact --model mri-x4 --sampler dpmpp --steps $1 --draws $2
  done
  $L evaluate --gt $mri/pairs_bsrgan/hr --lr $mri/pairs_bsrgan/lr --scale 4 --out $mri/report_bsrgan_1draw \
    --model runs/cpu/sr3_x4_res --model runs/cpu/ldm_sr_x4_vae_res --model runs/cpu/mri_x4 --model mri-x4 \
    --sampler dpmpp --steps 10 --draws 1 --heatmaps 0
  # The same models on bicubic LR (trained on bsrgan: a different degradation from their training).
  $L evaluate --gt $mri/pairs/hr --lr $mri/pairs/lr --scale 4 --out $mri/report_bicubic_shipped \
    --model bicubic --model runs/cpu/srcnn_x4_bsrgan --model mri-x4 --steps 1 --draws 1
  $L evaluate --gt $mri/pairs/hr --lr $mri/pairs/lr --scale 4 --out $mri/report_bicubic_shipped_1x8 \
    --model bicubic --model runs/cpu/srcnn_x4_bsrgan --model mri-x4 --steps 1 --draws 8
  # Histology: held-out CMU-1 tiles (y >= 2400) and Kather tiles (index >= 80, resized 224 -> 150).
  rm -rf $histo/gt_mix && mkdir -p $histo/gt_mix
  $PY - $histo/gt_mix <<'PY'
import sys
from pathlib import Path
from ldsr.data.datasets import list_sources, resize_shorter_side
from ldsr.io import read_image, write_image
roots = ["../shared/data/histology/cmu1-small-region/tiles150", "../shared/data/histology/kather2016"]
for s in list_sources(roots, "test"):
    img, _ = read_image(s.path)
    write_image(Path(sys.argv[1]) / (s.path.stem + ".png"), resize_shorter_side(img[..., :3], 150), bit_depth=8)
PY
  # Histology validation (picks which fine-tune ships; not a test split): windows of the slide outside every tile.
  $PY experiments/scripts/histology_val_windows.py $histo/val_windows
  $L evaluate --gt $histo/val_windows --preset bsrgan --seed 0 --scale 4 --out $histo/val_x4_1x1 --heatmaps 0 \
    --model bicubic --model runs/cpu/srcnn_x4_histo --model runs/cpu/fsrcnn_x4_histo --model runs/cpu/esrgan_x4_histo \
    --model runs/cpu/histology_x4_compact --model histology-x4 --sampler dpmpp --steps 1 --draws 1
  $L evaluate --gt $histo/val_windows --preset bsrgan --seed 0 --scale 8 --out $histo/val_x8_1x1 --heatmaps 0 \
    --model bicubic --model runs/cpu/srcnn_x8_histo --model runs/cpu/histology_x8_ft128 \
    --model runs/cpu/histology_x8_compact_from_x4 --model histology-x8 --sampler dpmpp --steps 1 --draws 1
  $L evaluate --gt $histo/val_windows --preset bsrgan --seed 0 --scale 8 --out $histo/val_x8_rot90_1x8 --heatmaps 0 \
    --model bicubic --model runs/cpu/srcnn_x8_histo --model histology-x8 --model runs/cpu/histology_x8_rot90 \
    --sampler dpmpp --steps 1 --draws 8
  # The draws rule (docs/BENCHMARKS.md): the shipped models' one-step estimate averaged over 1, 4 and 8 draws.
  for d in 1 4 8; do
    $L evaluate --gt $mri/val_colin/pairs/hr --lr $mri/val_colin/pairs/lr --scale 4 --out $mri/val_colin/draws_$d \
      --model mri-x4 --steps 1 --draws $d --heatmaps 0
    for s in 4 8; do
      $L evaluate --gt $histo/val_windows --preset bsrgan --seed 0 --scale $s --out $histo/val_x${s}_draws_$d \
        --model histology-x$s --steps 1 --draws $d --heatmaps 0
    done
  done
  for s in 4 8; do
    extra=()
    [ $s = 4 ] && extra=(--model runs/cpu/fsrcnn_x4_histo --model runs/cpu/esrgan_x4_histo --model runs/cpu/sr3_x4_res_histo
                         --model runs/cpu/ldm_sr_x4_histo --model runs/cpu/ldm_sr_x4_vq_histo --model runs/cpu/histology_x4_compact)
    [ $s = 8 ] && extra=(--model runs/cpu/fsrcnn_x8_histo --model runs/cpu/esrgan_x8_histo --model runs/cpu/histology_x8_ft128
                         --model runs/cpu/histology_x8_compact_from_x4)
    for m in "1 8 _1x8" "1 1 _mean" "10 8 "; do
      set -- $m
      $L evaluate --gt $histo/gt_mix --preset bsrgan --seed 0 --scale $s --out $histo/report_bsrgan_x$s${3:-} \
        --model bicubic --model runs/cpu/srcnn_x${s}_histo "${extra[@]}" --model histology-x$s \
        --sampler dpmpp --steps $1 --draws $2
    done
  done
  SCALE=4 bash experiments/scripts/steps_sweep.sh mri-x4 $mri/pairs_bsrgan runs/cpu/steps_sweep/mri-x4
}

case "${1:-}" in
  train) train ;;
  export) export_models ;;
  eval) evaluate ;;
  *) echo "usage: $0 train|export|eval" >&2; exit 2 ;;
esac
