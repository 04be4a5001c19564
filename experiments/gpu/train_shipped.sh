#!/usr/bin/env bash
# The next versions of the shipped SR models (mri-x4, histology-x4, histology-x8), trained on one lent GPU inside
# one device-tool call (issue 14, "A GPU recipe ready before a GPU arrives"): the blind fine-tunes of
# experiments/configs/gpu_blind/ (LR made on the GPU, bf16, batch 64), side by side, from the shipped weights.
#
#   bash experiments/gpu/train_shipped.sh OUT [SECONDS]      # from anywhere; SECONDS: whole budget (default 500)
#   LDSR_DRY=1 bash experiments/gpu/train_shipped.sh OUT     # CPU rehearsal on the fixtures, well under a minute
#   bash experiments/gpu/train_shipped.sh --pack-data runs/data runs/gpu_data [MIB]   # data to carry to the GPU
#
# Environment: LDSR_DATA  data folder, either the raw layout of ../shared/data (mri/, histology/: laid out by
#                         experiments/scripts/prepare_data.py here, first) or already laid out (mri_train/, ...);
#                         default: runs/data if laid out, else ../shared/data, else shared/data
#              LDSR_WORK  scratch folder for autoencoders, data and runs (default runs/gpu_blind)
#              PY         python with torch (default .venv/bin/python if present, else python3)
# Writes OUT/<model>/{ema.safetensors (fp16 EMA, <= 16 MiB, else the script fails), config.json, MODEL_CARD.md,
# log.csv}, OUT/env.txt (nvidia-smi, torch) and OUT/logs/*.log (tails). Exit status 0 only if all three are there.
# A model trained here replaces a shipped one only if it wins on the validation split (experiments/README.md).
set -uo pipefail
if [ "${1:-}" = --pack-data ]; then
  # Real files (links followed) of a laid-out data folder, for `run`'s carry (64 MiB in all): validation whole,
  # training images evenly thinned until all fits in MIB (default 50).
  #   bash experiments/gpu/train_shipped.sh --pack-data runs/data runs/gpu_data [MIB]
  exec "${PY:-python3}" - "${2:?laid-out data folder}" "${3:?output folder}" "${4:-50}" <<'EOF'
import shutil, sys
from pathlib import Path
src, dst, mib = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])
files = {s: sorted(p for p in (src / s).iterdir() if p.is_file()) for s in ("mri_val", "histo_val", "mri_train", "histo_train")}
size = {s: sum(p.stat().st_size for p in f) for s, f in files.items()}
fixed = size["mri_val"] + size["histo_val"]
keep = max(0.0, min(1.0, (mib * 2**20 - fixed) / max(1, size["mri_train"] + size["histo_train"])))
for s, f in files.items():
    n = len(f) if s.endswith("_val") else int(len(f) * keep)
    (dst / s).mkdir(parents=True, exist_ok=True)
    for i in sorted({int(k * len(f) / max(n, 1)) for k in range(n)}):
        shutil.copyfile(f[i], dst / s / f[i].name)
    print(s, n, "of", len(f))
EOF
fi
OUT=${1:?usage: train_shipped.sh OUT [SECONDS]}
BUDGET=${2:-500}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
mkdir -p "$OUT/logs" && OUT=$(cd "$OUT" && pwd)
cd "$ROOT" || exit 1
DRY=${LDSR_DRY:-0}
WORK=${LDSR_WORK:-runs/gpu_blind}
mkdir -p "$WORK" && WORK=$(cd "$WORK" && pwd)
if [ -z "${PY:-}" ]; then PY=python3; [ -x .venv/bin/python ] && PY=$ROOT/.venv/bin/python; fi
export PYTHONPATH=$ROOT/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
[ "$DRY" = 1 ] && export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
MAX_BYTES=$((16 * 1024 * 1024))
MODELS=(mri-x4 histology-x4 histology-x8)
T0=$(date +%s)
elapsed() { echo $(($(date +%s) - T0)); }
die() { echo "train_shipped: $*" >&2; exit 1; }

{ date -u; nvidia-smi 2>&1; "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda,
'available', torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else '-')"
  nproc; git -C "$ROOT" rev-parse HEAD 2>/dev/null; echo "budget $BUDGET s, dry $DRY"; } >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

# --- data: folders mri_train, mri_val, histo_train, histo_val ---
laid_out() { [ -d "$1/mri_train" ] && [ -d "$1/mri_val" ] && [ -d "$1/histo_train" ] && [ -d "$1/histo_val" ]; }
if [ "$DRY" = 1 ]; then
  D=$WORK/data_dry
  rm -rf "$D" && mkdir -p "$D"/{mri_train,mri_val,histo_train,histo_val}
  cp fixtures/mri/figshare_*.jpg "$D/mri_train/" && cp fixtures/mri/colin27_z141.png "$D/mri_val/"
  cp fixtures/histology/cmu1sr_*.png fixtures/histology/kather2016_82_*.png "$D/histo_train/"
  cp fixtures/histology/kather2016_86_*.png "$D/histo_val/"
else
  D=${LDSR_DATA:-}
  if [ -z "$D" ]; then
    for c in runs/data ../shared/data shared/data; do
      if laid_out "$c" || [ -d "$c/mri" ]; then D=$c; break; fi
    done
  fi
  [ -n "$D" ] && [ -d "$D" ] || die "no data: set LDSR_DATA (raw ../shared/data layout or prepared mri_train/...)"
  if ! laid_out "$D"; then
    echo "laying out $D -> $WORK/data"
    "$PY" experiments/scripts/prepare_data.py "$D" "$WORK/data" >"$OUT/logs/prepare_data.log" 2>&1 ||
      { tail -20 "$OUT/logs/prepare_data.log"; die "prepare_data.py failed"; }
    D=$WORK/data
  fi
fi
D=$(cd "$D" && pwd)
for s in mri_train mri_val histo_train histo_val; do echo "data $s: $(find -L "$D/$s" -type f | wc -l) files"; done
echo "data ready at $(elapsed) s"

# --- the shipped models' own autoencoders, one process ---
"$PY" - "$WORK/ae" "${MODELS[@]}" <<'EOF' || die "autoencoder extraction failed"
import subprocess, sys
out, names = sys.argv[1], sys.argv[2:]
procs = [subprocess.Popen([sys.executable, "experiments/scripts/extract_autoencoder.py", n, f"{out}/{n}"]) for n in names]
sys.exit(max(p.wait() for p in procs))
EOF
echo "autoencoders ready at $(elapsed) s"

# --- training, side by side on the one GPU ---
left=$((BUDGET - $(elapsed) - 100))  # 100 s: start-up, the last checkpoint, the validation and the export
minutes=$("$PY" -c "print(round(max($left, 30) / 60, 2))")
guard=$((left + 80))  # SIGTERM (the run still checkpoints) if a run overshoots its budget
DRYO=()
if [ "$DRY" = 1 ]; then
  minutes=0.5 guard=120
  DRYO=(train.steps=2 train.batch_size=2 train.warmup_steps=0 train.ckpt_every=2 train.log_every=1 data.hr_size=64
        data.num_workers=0 data.val_count=1 train.device=cpu train.precision=no sr.samples=1)
fi
echo "training for $minutes min each (guard $guard s)"
pids=()
for m in "${MODELS[@]}"; do
  c=${m//-/_}
  case $m in mri-*) tr=mri_train va=mri_val ;; *) tr=histo_train va=histo_val ;; esac
  timeout -s TERM "$guard" "$PY" -m ldsr train sr -c "experiments/configs/gpu_blind/$c.yaml" \
    "train.max_minutes=$minutes" "train.run_dir=$WORK/runs/$c" "data.train=[$D/$tr]" "data.val=[$D/$va]" \
    "sr.autoencoder=$WORK/ae/$m" "${DRYO[@]}" >"$OUT/logs/$c.log" 2>&1 &
  pids+=($!)
done
for i in "${!pids[@]}"; do wait "${pids[$i]}"; echo "${MODELS[$i]} rc=$? at $(elapsed) s"; done

# --- export: fp16 EMA weights (<= 16 MiB), config, card, log ---
"$PY" - "$WORK/runs" "$OUT" "$MAX_BYTES" "${MODELS[@]}" <<'EOF'
import shutil, sys
from pathlib import Path
from ldsr.pipeline.export import export_model
runs, out, max_bytes, names = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
bad = []
for n in names:
    run = runs / n.replace("-", "_")
    try:
        folder = export_model(run, n, out_root=out, half=True, max_mb=max_bytes / 2**20,
                              card={"Trained by": "experiments/gpu/train_shipped.sh (blind fine-tune, one GPU)"})
        shutil.copy(run / "log.csv", folder / "log.csv")
        size = (folder / "ema.safetensors").stat().st_size
        if size > max_bytes:
            raise ValueError(f"ema.safetensors is {size} bytes, over {max_bytes}")
        print(f"{n}: {folder} ema {size / 2**20:.2f} MiB")
    except Exception as e:  # every model is tried; the status says whether all made it
        print(f"FAILED {n}: {e}", file=sys.stderr)
        bad.append(n)
sys.exit(1 if bad else 0)
EOF
rc=$?
for m in "${MODELS[@]}"; do
  f=$OUT/logs/${m//-/_}.log
  [ -f "$f" ] && { tail -c 100000 "$f" >"$f.tail" && mv "$f.tail" "$f"; echo "== $m"; tail -3 "$f"; }
  [ -f "$OUT/$m/log.csv" ] && tail -2 "$OUT/$m/log.csv"
done
echo "done at $(elapsed) s, export rc=$rc"
exit $rc
