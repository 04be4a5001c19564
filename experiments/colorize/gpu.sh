#!/usr/bin/env bash
# One GPU session for the colorization table (a lent H200 through the device tool: 15 minutes of device time
# in all, start-up included). Five models x MINUTES of training, then the held-out evaluation on the GPU.
#   bash experiments/colorize/gpu.sh [MINUTES]     # default 1.5: ~8 min of training, ~2 min of evaluation
# Bring runs/colorize/ back (the device tool returns files written under $OUT: copy them there), then on the
# CPU: bash experiments/colorize/run.sh export, and the table of runs/colorize/eval/summary.md into
# docs/BENCHMARKS.md with this command, the machine and the date.
set -euo pipefail
minutes=${1:-1.5}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
bash experiments/colorize/run.sh train "$minutes"
bash experiments/colorize/run.sh eval cuda
if [ -n "${OUT:-}" ]; then   # the device tool's return folder
  mkdir -p "$OUT/colorize"
  for m in diffusion_latent diffusion_pixel regression zhang pix2pix; do
    mkdir -p "$OUT/colorize/$m/checkpoints"
    latest=$(cat "runs/colorize/$m/checkpoints/latest")
    cp -r "runs/colorize/$m/checkpoints/$latest" "$OUT/colorize/$m/checkpoints/"
    rm -rf "$OUT/colorize/$m/checkpoints/$latest/state"      # optimizer state: not needed, too large to return
    echo "$latest" > "$OUT/colorize/$m/checkpoints/latest"
    cp "runs/colorize/$m/log.csv" "$OUT/colorize/$m/"
  done
  cp -r runs/colorize/eval "$OUT/colorize/"
fi
