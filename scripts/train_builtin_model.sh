#!/usr/bin/env bash
# Reproduce the built-in nuclei model (src/napari_unet/models/nuclei.safetensors), end to end.
#
# 1. Train with the project's own `napari-unet train` on the 541 fluorescence images of the
#    2018 Data Science Bowl stage-1 training set (../shared/data/dsb2018_fluo, CC0), holding out
#    10% for validation. The stage-1 test set is never seen. CPU only; on these 2-core machines
#    it takes about 2.5 h (THREADS=1 when the machine is busy; the shipped model used 1).
#    Stage 1: 20 epochs from scratch with the border weight on background gaps only. Stage 2:
#    10 more epochs starting from stage 1 (--init) with the weight also on the rims where
#    nuclei touch (the default), about 25 min. Stage 3: 12 epochs on larger patches (192 px)
#    with a stronger border weight (--w0 15), about 55 min on one thread. The same seed keeps
#    the same validation split.
# 2. Choose the post-processing thresholds on the held-out validation images
#    (tune_postprocessing.py prints a table; the values below are its best mean-AP row).
# 3. Write them and the expected object diameter into the card, score the model and the Otsu
#    baseline on the test images, and write the scores into the card too.
# Usage: bash scripts/train_builtin_model.sh [OUTPUT.safetensors]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
data=${NAPARI_UNET_DATA:-$here/../shared/data}
out=${1:-$here/src/napari_unet/models/nuclei.safetensors}
bin=${NAPARI_UNET_BIN:-$here/.venv/bin}
work=$(mktemp -d)

description="Fluorescence nuclei (2D), instance segmentation: background / interior / boundary classes + seeded watershed. Trained on DSB 2018 stage-1 train, fluorescence subset (BBBC038, Caicedo et al., Nature Methods 16, 2019; CC0)."
stage1=$work/stage1.safetensors
stage2=$work/stage2.safetensors
"$bin/napari-unet" train \
  --images "$data/dsb2018_fluo/images" --labels "$data/dsb2018_fluo/labels" \
  -o "$stage1" --checkpoint "$work/stage1.ckpt" \
  --task instance --ndim 2 --depth 4 --base-filters 16 \
  --patch 128 --batch 8 --epochs 20 --steps-per-epoch 200 --lr 2e-3 --zoom 0.5 2 \
  --val-fraction 0.1 --seed 2018 --device cpu --threads "${THREADS:-2}" --half \
  --no-contact-weight --name nuclei --description "$description"
"$bin/napari-unet" train \
  --images "$data/dsb2018_fluo/images" --labels "$data/dsb2018_fluo/labels" \
  -o "$stage2" --checkpoint "$work/stage2.ckpt" --init "$stage1" \
  --task instance --patch 128 --batch 8 --epochs 10 --steps-per-epoch 200 --lr 1e-3 \
  --zoom 0.5 2 --val-fraction 0.1 --seed 2018 --device cpu --threads "${THREADS:-2}" --half \
  --name nuclei --description "$description"
"$bin/napari-unet" train \
  --images "$data/dsb2018_fluo/images" --labels "$data/dsb2018_fluo/labels" \
  -o "$out" --checkpoint "${out%.safetensors}.ckpt" --init "$stage2" \
  --task instance --patch 192 --batch 6 --epochs 12 --steps-per-epoch 250 --lr 5e-4 --w0 15 \
  --zoom 0.5 2 --val-fraction 0.1 --seed 2018 --device cpu --threads "${THREADS:-2}" --half \
  --name nuclei --description "$description"

"$bin/python" "$here/scripts/tune_postprocessing.py" "$out" --seed 2018 --data "$data/dsb2018_fluo"
post=(--seed-threshold 0.6 --foreground-threshold 0.6 --split 1.0 --min-size 20)
"$bin/python" "$here/scripts/finalize_builtin_model.py" "$out" "${post[@]}" \
  --training-labels "$data/dsb2018_fluo/labels" --description "$description"
NAPARI_UNET_BIN=$bin bash "$here/scripts/score_builtin_model.sh" "$out" "$work"
"$bin/python" "$here/scripts/finalize_builtin_model.py" "$out" "${post[@]}" \
  --training-labels "$data/dsb2018_fluo/labels" --test-csv "$work/unet.csv" --baseline-csv "$work/otsu.csv"
