#!/usr/bin/env bash
# Reproduce the built-in nuclei model (src/napari_unet/models/nuclei.safetensors).
#
# Trains with the project's own `napari-unet train` on the 541 fluorescence images of the
# 2018 Data Science Bowl stage-1 training set (../shared/data/dsb2018_fluo, CC0), holding out
# 10% for validation. The stage-1 test set is never seen. CPU only; on these 2-core machines it
# takes about an hour (THREADS=1 when the machine is busy). Usage: bash scripts/train_builtin_model.sh [OUTPUT.safetensors]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
data=${NAPARI_UNET_DATA:-$here/../shared/data}
out=${1:-$here/src/napari_unet/models/nuclei.safetensors}
napari_unet=${NAPARI_UNET:-$here/.venv/bin/napari-unet}

"$napari_unet" train \
  --images "$data/dsb2018_fluo/images" --labels "$data/dsb2018_fluo/labels" \
  -o "$out" --checkpoint "${out%.safetensors}.ckpt" \
  --task instance --ndim 2 --depth 4 --base-filters 16 \
  --patch 128 --batch 8 --epochs 20 --steps-per-epoch 200 --lr 2e-3 --zoom 0.5 2 \
  --val-fraction 0.1 --seed 2018 --device cpu --threads "${THREADS:-2}" --half \
  --name nuclei \
  --description "Fluorescence nuclei (2D), instance segmentation: background / interior / boundary classes + seeded watershed. Trained on DSB 2018 stage-1 train, fluorescence subset (BBBC038, Caicedo et al., Nature Methods 16, 2019; CC0)."
