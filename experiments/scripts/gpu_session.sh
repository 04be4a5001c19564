#!/usr/bin/env bash
# One GPU session (run through the device tool; 15 minutes of an H200 or H100 in all): the checks of the
# latent-diffusion issue that need a GPU, and the histology models of experiments/configs/gpu/ trained side by side.
#
#   bash experiments/scripts/gpu_session.sh OUT_DIR [SECONDS]     # from the repository root, ../shared/data present
#
# 1. `ldsr bench speed --device cuda` at HR 128 / 256 / 512 (GPU to itself);
# 2. in parallel, until SECONDS (default 500) after the start:
#    - experiments/scripts/precision_check.py (fp32 / bf16 / fp16 training of tiny SR3 and VAE);
#    - histology x4 and x8 VAE-DDPM, VQ-VAE then VQVAE-DDPM x4, SR3 x4 (bf16), and SRCNN / FSRCNN / ESRGAN x4,
#      SRCNN x8 (experiments/configs/gpu/*.yaml; each stops with a checkpoint when its train.max_minutes is spent);
# 3. OUT_DIR/<group>.tar: each run's log.csv, config and EMA weights of its last checkpoint; reports.tar: the
#    bench table, the precision table, nvidia-smi and every process's log.
# LDSR_DRY=1 rehearses it on the CPU in a minute (tiny bench, no precision check, a few seconds per run).
set -u
OUT=${1:?usage: gpu_session.sh OUT_DIR [SECONDS]}
END_S=${2:-500}
PY=${PY:-python3}
DRY=${LDSR_DRY:-0}
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 TOKENIZERS_PARALLELISM=false
T0=$(date +%s)
mkdir -p "$OUT/logs"
elapsed() { echo $(( $(date +%s) - T0 )); }
ldsr() { "$PY" -m ldsr "$@"; }

{ date -u; nvidia-smi 2>/dev/null; "$PY" -c "import torch, diffusers, accelerate; print('torch', torch.__version__,
'cuda', torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else '-',
'diffusers', diffusers.__version__, 'accelerate', accelerate.__version__)"; env -u OMP_NUM_THREADS nproc; } >"$OUT/logs/env.txt" 2>&1
cat "$OUT/logs/env.txt"

# --- 1. latent vs pixel speed and memory (nothing else on the GPU) ---
if [ "$DRY" = 1 ]; then
  timeout 150 "$PY" -m ldsr bench speed --device cpu --hr 32 --steps 2 --preset tiny >"$OUT/logs/bench_speed.txt" 2>&1
else
  # 126 s on an H200 (2026-11-26): six fresh processes, each importing torch and diffusers
  timeout 240 "$PY" -m ldsr bench speed --device cuda --hr 128 --hr 256 --hr 512 --steps 50 --preset small \
    --repeats 2 >"$OUT/logs/bench_speed.txt" 2>&1
fi
echo "bench rc=$? at $(elapsed) s"; cat "$OUT/logs/bench_speed.txt"

# --- 2. training, side by side ---
left=$(( END_S - $(elapsed) - 60 ))  # 60 s for the last checkpoints, validation and packing
[ "$DRY" = 1 ] && left=12
minutes=$("$PY" -c "print(round(max($left, 30) / 60, 2))")
echo "training for $minutes min each"
W=3; WB=1; [ "$DRY" = 1 ] && { W=1; WB=0; }
guard=$(( left + 120 ))  # hard stop (SIGTERM: the run still checkpoints) if a run overshoots its budget

train() {  # train TASK CONFIG NAME WORKERS [OVERRIDES...]
  local task=$1 cfg=$2 name=$3 workers=$4; shift 4
  timeout -s TERM $guard "$PY" -m ldsr train "$task" -c "$cfg" "train.max_minutes=$minutes" \
    "data.num_workers=$workers" "$@" >"$OUT/logs/$name.log" 2>&1
  echo "$name rc=$? at $(elapsed) s"
}

vq_chain() {  # VQ-VAE (fixed steps), its residual scale, then VQVAE-DDPM for the time left
  timeout -s TERM $guard "$PY" -m ldsr train autoencoder -c experiments/configs/gpu/vqvae_f4_histo.yaml "data.num_workers=$W" \
    $([ "$DRY" = 1 ] && echo train.steps=4 train.max_minutes=0.1) >"$OUT/logs/vqvae_f4_histo.log" 2>&1
  echo "vqvae_f4_histo rc=$? at $(elapsed) s"
  local s
  s=$("$PY" experiments/scripts/residual_std.py experiments/configs/gpu/histology_x4_vq.yaml --samples 256 2>>"$OUT/logs/residual_vq.log" |
      tee -a "$OUT/logs/residual_vq.log" | sed -n 's/^sr.residual_scale: //p')
  echo "vq residual_scale=$s"
  local rest
  rest=$("$PY" -c "print(round(max($END_S - $(elapsed) - 60, 30) / 60, 2))")
  [ "$DRY" = 1 ] && rest=0.1
  timeout -s TERM $guard "$PY" -m ldsr train sr -c experiments/configs/gpu/histology_x4_vq.yaml "train.max_minutes=$rest" \
    "data.num_workers=$W" "sr.residual_scale=${s:-1.0}" >"$OUT/logs/histology_x4_vq.log" 2>&1
  echo "histology_x4_vq rc=$? at $(elapsed) s"
}

pids=()
if [ "$DRY" != 1 ]; then
  timeout $guard "$PY" experiments/scripts/precision_check.py "$OUT/precision" >"$OUT/logs/precision.log" 2>&1 &
  pids+=($!)
fi
train sr experiments/configs/gpu/histology_x4.yaml histology_x4 $W & pids+=($!)
train sr experiments/configs/gpu/histology_x8.yaml histology_x8 $W & pids+=($!)
train sr experiments/configs/gpu/sr3_x4_histo.yaml sr3_x4_histo $W $([ "$DRY" = 1 ] && echo train.precision=no) & pids+=($!)
vq_chain & pids+=($!)
for b in srcnn_x4_histo fsrcnn_x4_histo esrgan_x4_histo srcnn_x8_histo; do
  train baseline experiments/configs/gpu/$b.yaml $b $WB & pids+=($!)
done
wait "${pids[@]}"
echo "training done at $(elapsed) s"

# --- 3. pack ---
pack() {  # pack TAR RUN...
  local tarname=$1; shift
  local files=()
  for r in "$@"; do
    local d=runs/gpu/$r
    [ -f "$d/checkpoints/latest" ] || { echo "no checkpoint in $d"; continue; }
    local last
    last=$(cat "$d/checkpoints/latest")
    files+=("$d/log.csv" "$d/checkpoints/latest" "$d/checkpoints/$last/config.json" "$d/checkpoints/$last/ema.safetensors")
  done
  [ ${#files[@]} -gt 0 ] && tar cf "$OUT/$tarname.tar" "${files[@]}"
}
pack histology_x4 histology_x4
pack histology_x8 histology_x8
pack vq vqvae_f4_histo histology_x4_vq
pack sr3 sr3_x4_histo
pack baselines srcnn_x4_histo fsrcnn_x4_histo esrgan_x4_histo srcnn_x8_histo
[ -f "$OUT/precision/precision.md" ] && cp "$OUT/precision/precision."{md,json} "$OUT/logs/"
tar cf "$OUT/reports.tar" -C "$OUT" logs
rm -rf "$OUT/precision" "$OUT/logs"
ls -la "$OUT"
for r in runs/gpu/*/; do echo "$r $(tail -1 "$r/log.csv" 2>/dev/null)"; done
[ -f "$OUT/reports.tar" ] && tar xOf "$OUT/reports.tar" logs/precision.md 2>/dev/null
echo "done at $(elapsed) s"
