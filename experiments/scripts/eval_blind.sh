#!/usr/bin/env bash
# Held-out evaluation of the blind models (issue 14): every LR preset a user may bring, one `ldsr evaluate` run per
# (test set, preset) with bicubic, the blind CNN baselines, the previous shipped model (a copy of its folder in
# runs/models/) and the shipped model in both modes.
# Test folders come from experiments/scripts/prepare_data.py (runs/data/*_test). Reports land in runs/eval/; their
# summary.json and results.csv (no images) are copied to docs/results/<name>/, from which
# experiments/render_benchmarks.py renders the tables of docs/BENCHMARKS.md.
#   bash experiments/scripts/eval_blind.sh mri        # or: histo_x4, histo_x8
set -euo pipefail
cd "$(dirname "$0")/../.."
LDSR=${LDSR:-.venv/bin/ldsr}
set_name=$1
case $set_name in
  mri)      test=runs/data/mri_test;   scale=4; hr=256; presets=${PRESETS:-"bicubic bsrgan kspace"}
            models=(-m bicubic -m runs/blind/srcnn_x4_mri -m runs/blind/esrgan_x4_mri -m runs/models/mri-x4-previous
                    -m mri-x4) ;;
  mri_off)  test=runs/data/mri_test;   scale=4; hr=256; presets=${PRESETS:-"bsrgan bicubic kspace"}
            # the shipped mri-x4 with --consistency off: `python scripts/export_model.py runs/blind/mri_x4
            # mri-x4-consistency-off --out runs/models --default 'consistency="off"'` (same weights and defaults)
            models=(-m bicubic -m runs/models/mri-x4-consistency-off) ;;
  histo_x4) test=runs/data/histo_test; scale=4; hr=128; presets="bicubic bsrgan"
            models=(-m bicubic -m histology-x4) ;;
  histo_x8) test=runs/data/histo_test; scale=8; hr=128; presets="bicubic bsrgan"
            models=(-m bicubic -m histology-x8) ;;
  *) echo "unknown set $set_name" >&2; exit 2 ;;
esac
keep=()  # only the models that exist (a baseline may not be trained yet); the report says which ran
for ((i = 1; i < ${#models[@]}; i += 2)); do
  m=${models[$i]}
  if [[ $m == runs/* && ! -d $m ]]; then echo "skip $m (not trained)" >&2; else keep+=(-m "$m"); fi
done
for p in $presets; do
  base=${set_name%_off}; suffix=${set_name#"$base"}  # mri_off: the mri pairs, reports named *_off
  pairs=runs/eval/${base}_${p}
  [[ -d $pairs/lr ]] || $LDSR degrade -i "$test" -o "$pairs" --scale $scale --preset "$p" --seed 0 --hr-size $hr
  sharp=()  # each diffusion model also in sharp mode (a posterior draw), in the same run
  for ((i = 1; i < ${#keep[@]}; i += 2)); do
    case ${keep[$i]} in bicubic|runs/*) ;; *) sharp+=(-m "${keep[$i]}:sharp") ;; esac  # the shipped models
  done
  out=$pairs/report$suffix
  $LDSR evaluate -i "$pairs/hr" --lr "$pairs/lr" --scale $scale "${keep[@]}" "${sharp[@]}" -o "$out" --heatmaps 1
  res=docs/results/${base}_${p}$suffix
  mkdir -p "$res"
  cp "$out/summary.json" "$out/results.csv" "$res/"
  .venv/bin/python -c 'import json, os, platform, sys; print(json.dumps({"cpus": os.cpu_count(), "machine": platform.machine(), "processor": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor()), "python": sys.version.split()[0]}))' > "$res/machine.json"
done
