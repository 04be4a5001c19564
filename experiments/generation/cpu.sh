#!/usr/bin/env bash
# The generation benchmark on the 2-core CPU (issue 16), at an EQUAL training budget per generator:
# every model gets the same wall-clock minutes on one torch thread (two jobs run side by side), so the table
# answers "which generator is best for the same compute" (the thesis's argument for latent models).
#
#   bash experiments/generation/cpu.sh sets            # 128 x 128 train / held-out folders (prepare_sets.py)
#   bash experiments/generation/cpu.sh ae vae 16       # the MRI VAE f=4 of the VAE-DDPM, 16 minutes
#   bash experiments/generation/cpu.sh ae vqvae 16     # the MRI VQ-VAE f=4 of the VQ-DDPM, 16 minutes
#   bash experiments/generation/cpu.sh feat 800        # the offline feature network ldsr-feat-mri v1, 800 steps
#   bash experiments/generation/cpu.sh train vq 30     # one generator (gan | pixel | vae | vq) for 30 minutes
#   bash experiments/generation/cpu.sh sample vq       # N samples, DPM-Solver++ STEPS (+ 1000-step DDPM: N_DDPM)
#   bash experiments/generation/cpu.sh eval vq         # evaluate-generation against the held-out split
#   bash experiments/generation/cpu.sh reference       # training images as "samples": the floor at this N
#
# Environment: DOMAIN (mri | histology, default mri; histology: `sets` takes the 400 random CMU-1 crops and the
# tiles of the training split that experiments/scripts/prepare_data.py wrote to runs/data/histo_train, whole
# 150-px tiles of the held-out split as the test set; its VAE-DDPM uses the VAE of the shipped histology-x4),
# N (samples, default 100), STEPS (DPM-Solver++ steps, default 20), N_DDPM (samples of the
# 1000-step DDPM, default 32; 0 skips; never for the pixel model: ~11 s a network call of 32 on one thread).
# A call that finds a run's checkpoints continues it with --resume for the given minutes.
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
DOMAIN=${DOMAIN:-mri}; ROOT=runs/gen; SETS=$ROOT/sets/$DOMAIN; FEAT=$ROOT/features/ldsr-feat-$DOMAIN-v1.safetensors
N=${N:-100}; STEPS=${STEPS:-20}; N_DDPM=${N_DDPM:-32}
DATA=(data.train="[$SETS/train]" data.split=all data.split_rules="[]" data.resize=0)

case ${1:?usage: cpu.sh sets|ae|feat|train|sample|eval|reference ...} in
sets)
  if [[ $DOMAIN == mri ]]; then
    python experiments/generation/prepare_sets.py --data ../shared/data/mri/brain-tumor-figshare \
      --split-rules experiments/splits/figshare.yaml --channels 1 --size 128 --resize 128 --out "$SETS"
  else  # pixel size kept: centre 128-px crops of the 150-px tiles and of the 160-px CMU-1 crops
    python experiments/generation/prepare_sets.py --data ../shared/data/histology/cmu1-small-region/tiles150 \
      ../shared/data/histology/kather2016 --split-rules experiments/splits/cmu1.yaml experiments/splits/kather2016.yaml \
      --channels 3 --size 128 --resize 150 --out "$SETS"
    python experiments/generation/prepare_sets.py --data runs/data/histo_train --channels 3 --size 128 --resize 160 \
      --out "$ROOT/sets/histology_crops"
    cp "$ROOT"/sets/histology_crops/train/*cmu1crop* "$SETS/train/"
  fi ;;
ae)  # tiny VAE / VQ-VAE on 64 x 64 crops of the 128 x 128 training slices (lr 1e-3 as configs/cpu/vae_f4.yaml)
  ldsr train autoencoder -c "configs/generate_${DOMAIN}_${2:?vae|vqvae}_f4.yaml" "${DATA[@]}" data.hr_size=64 \
    train.batch_size=8 train.lr=1e-3 train.warmup_steps=0 train.steps=100000 train.max_minutes="${3:?minutes}" \
    train.ckpt_every=500 \
    train.keep_last=1 train.log_every=50 ;;
feat)
  python experiments/generation/train_features.py --images "$SETS/train" --name "ldsr-feat-$DOMAIN" --version 1 \
    --steps "${2:?steps}" --out "$FEAT" ;;
train)  # diffusion models: lr 2e-4, 200 warm-up steps; the GAN keeps its DCGAN settings
  model=${2:?gan|pixel|vae|vq}; minutes=${3:?minutes}; run=$ROOT/${DOMAIN}_$model
  extra=(train.precision=no train.steps=1000000 train.max_minutes="$minutes" train.ckpt_every=250
         train.keep_last=1 train.log_every=25)
  [[ $model != gan ]] && extra+=(train.lr=2e-4 train.warmup_steps=200 train.ema_decay=0.999)
  [[ $model == pixel ]] && extra+=(train.batch_size=8)   # 16 x the latent model's pixels per sample
  resume=(); [[ -d $run/checkpoints ]] && resume=(--resume)
  ldsr train generate -c "configs/generate_${DOMAIN}_$model.yaml" -o "$run" "${resume[@]}" "${DATA[@]}" "${extra[@]}" ;;
sample)
  model=${2:?gan|pixel|vae|vq}; ckpt=$(ls -d "$ROOT/${DOMAIN}_$model"/checkpoints/step_* | tail -1)
  ldsr generate -m "$ckpt" -n "$N" -o "$ROOT/samples/${DOMAIN}_$model" --sampler dpmpp --steps "$STEPS" --seed 0 -q
  if [[ $model == vae || $model == vq ]] && (( N_DDPM > 0 )); then
    ldsr generate -m "$ckpt" -n "$N_DDPM" -o "$ROOT/samples/${DOMAIN}_${model}_ddpm" --sampler ddpm --seed 0 -q
  fi ;;
eval)
  model=${2:?gan|pixel|vae|vq}
  feat=(); [[ -f $FEAT ]] && feat=(--features "$FEAT")
  for s in "$ROOT/samples/${DOMAIN}_$model" "$ROOT/samples/${DOMAIN}_${model}_ddpm"; do
    [[ -d $s ]] || continue
    ldsr evaluate-generation --real "$SETS/test" --fake "$s" --train "$SETS/train" "${feat[@]}" \
      --out "$ROOT/eval/$(basename "$s")"
  done ;;
reference)  # N training images (every k-th) as the samples: the distances real-vs-real give at this N
  ref=$ROOT/samples/${DOMAIN}_real_train; rm -rf "$ref"; mkdir -p "$ref"
  mapfile -t files < <(ls "$SETS/train")
  k=$(( ${#files[@]} / N ))
  for ((i = 0; i < N; i++)); do cp "$SETS/train/${files[$((i * k))]}" "$ref/"; done
  feat=(); [[ -f $FEAT ]] && feat=(--features "$FEAT")
  ldsr evaluate-generation --real "$SETS/test" --fake "$ref" "${feat[@]}" --out "$ROOT/eval/${DOMAIN}_real_train" ;;
*) echo "cpu.sh: unknown stage $1" >&2; exit 2 ;;
esac
