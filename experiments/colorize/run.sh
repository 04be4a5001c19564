#!/usr/bin/env bash
# Colorization (issue 17): the five trained colorizers, the held-out table and the shipped histology-colorize.
# Run from the repository root with ../shared/data present.
#
#   bash experiments/colorize/run.sh train [MINUTES] [DEVICE_ARGS...]  # each model trains MINUTES (default 2)
#   bash experiments/colorize/run.sh train-cpu                          # the 2-core CPU runs of the table
#   bash experiments/colorize/run.sh eval [cpu|cuda]                    # runs/colorize/eval/: summary.md / .json,
#                                                                       #   results.csv, grid.png, <method>/*.png;
#                                                                       #   copied to docs/results/colorize_histology
#                                                                       #   (TRAIN_COMMAND: how the runs were trained)
#   bash experiments/colorize/run.sh export                             # src/ldsr/assets/models/histology-colorize
#
# Every model gets the same wall-clock budget (train.max_minutes) on the same device; on a 2-core CPU use a
# larger MINUTES (e.g. 60) and expect few steps. The table compares: the shipped latent diffusion model, pixel
# diffusion, the L1 regression UNet, Zhang et al. 2016, pix2pix, the constant training-mean chroma and the grey
# input itself (PSNR / SSIM on RGB, mean CIEDE2000, colourfulness ratio, max |dL*|, parameters, s / image).
set -euo pipefail
LDSR=${LDSR:-.venv/bin/ldsr}
PY=${PY:-.venv/bin/python}
OUT=runs/colorize
DATA=${DATA:-../shared/data}   # the folder holding histology/ (elsewhere on a device machine: DATA=...)
read -r -a EXTRA <<< "${EXTRA:-}"   # more overrides for every training run, e.g. EXTRA="train.batch_size=16"
TRAIN="data.train=[$DATA/histology/cmu1-small-region/tiles150,$DATA/histology/kather2016]"
MODELS=(diffusion_latent diffusion_pixel regression zhang pix2pix)

case "${1:-}" in
  train)
    minutes=${2:-2}
    for m in "${MODELS[@]}"; do
      "$LDSR" train colorize -c "experiments/colorize/configs/$m.yaml" "train.max_minutes=$minutes" "$TRAIN" "${EXTRA[@]}"
    done
    ;;
  train-cpu)
    # What made docs/results/colorize_histology (2-core CPU, one thread per run, 14 minutes each): the latent
    # model on 128-px crops, batch 16; the pixel-space models (16x more positions per crop for the same UNet) on
    # 64-px crops, batch 8, warm-up 50, so that they take more steps in the same time.
    for m in "${MODELS[@]}"; do
      if [[ $m == diffusion_latent ]]; then crop=(train.batch_size=16); else
        crop=(train.batch_size=8 data.hr_size=64 train.warmup_steps=50); fi
      OMP_NUM_THREADS=1 "$LDSR" train colorize -c "experiments/colorize/configs/$m.yaml" train.max_minutes=14 "$TRAIN" \
        data.num_workers=0 "${crop[@]}"
    done
    ;;
  eval)
    device=${2:-auto}
    "$PY" experiments/colorize/prepare.py --out "$OUT" --data "$DATA"     # held-out references + training mean chroma
    chroma=$(cat "$OUT/mean_chroma.txt")
    args=()
    for m in "${MODELS[@]}"; do args+=(-m "${m//_/-}=$OUT/$m"); done
    cmd=("$LDSR" evaluate-colorization -i "$OUT/heldout" -o "$OUT/eval" "${args[@]}"
         -m "mean-chroma=$chroma" -m grey=gray --grid 6 --save-images --device "$device")
    "${cmd[@]}"
    # docs/results/colorize_histology: what experiments/render_benchmarks.py renders into docs/BENCHMARKS.md
    res=docs/results/colorize_histology
    mkdir -p "$res"
    cp "$OUT/eval/summary.json" "$OUT/eval/results.csv" "$res/"
    "$PY" -c 'import sys; from PIL import Image; Image.open(sys.argv[1]).convert("RGB").save(sys.argv[2], quality=90)' \
      "$OUT/eval/grid.png" docs/figures/colorize_histology_grid.jpg
    "$PY" - "$res" "${TRAIN_COMMAND:-bash experiments/colorize/run.sh train}" "${cmd[*]:1}" "$device" "${MODELS[@]}" <<'PY'
import datetime, json, os, platform, sys
res, train, evaluate, device, *models = sys.argv[1:]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
json.dump({"cpus": os.cpu_count(), "machine": platform.machine(), "processor": cpu}, open(f"{res}/machine.json", "w"))
run = {"shipped": "diffusion-latent", "trained": [m.replace("_", "-") for m in models], "train_command": train,
       "eval_command": "ldsr " + evaluate, "device": device, "date": datetime.datetime.now(datetime.UTC).isoformat()}
json.dump(run, open(f"{res}/run.json", "w"), indent=2)
PY
    ;;
  export)
    "$PY" experiments/colorize/export.py "$OUT/diffusion_latent" src/ldsr/assets/models/histology-colorize \
      --summary "$OUT/eval/summary.json" --row diffusion-latent
    ;;
  *)
    sed -n '2,16p' "$0"
    exit 2
    ;;
esac
