#!/usr/bin/env bash
# Reproduce the built-in nuclei model (src/napari_unet/models/nuclei.safetensors), end to end.
#
# 1. Train with the project's own `napari-unet train` on the 541 fluorescence images of the
#    2018 Data Science Bowl stage-1 training set (../shared/data/dsb2018_fluo, CC0), holding out
#    10% for validation (seed 2018). The stage-1 test set is never seen. One run from scratch:
#    base-32 depth-4 U-Net, 30 epochs x 250 steps of batch 16 on 256x256 patches, peak lr 1e-3
#    (AdamW, warm-up + cosine), border weight w0 15 on background gaps and on the rims where
#    nuclei touch, 0.5-2x zoom augmentation. Made for a GPU: the shipped model trained on one
#    H100 in about 7 minutes (it shared the GPU with another run; --workers 7). On a 2-core CPU
#    the same command would take about 18 hours (benchmarks/bench_training.py: ~8.6 s per step). cuDNN's convolution kernels are not bit-deterministic, so a rerun on a GPU gives a
#    model that differs in the last digits and scores within noise of the shipped one.
# 2. Choose the post-processing thresholds on the held-out validation images
#    (tune_postprocessing.py prints a table; the values below are its best mean-AP row).
# 3. Write them and the expected object diameter into the card, score the model and the Otsu
#    baseline on the test images, and write the scores into the card too.
# Usage: DEVICE=cuda bash scripts/train_builtin_model.sh [OUTPUT.safetensors]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
data=${NAPARI_UNET_DATA:-$here/../shared/data}
out=${1:-$here/src/napari_unet/models/nuclei.safetensors}
bin=${NAPARI_UNET_BIN:-$here/.venv/bin}
work=$(mktemp -d)

description="Fluorescence nuclei (2D), instance segmentation: background / interior / boundary classes + seeded watershed. Trained on DSB 2018 stage-1 train, fluorescence subset (BBBC038, Caicedo et al., Nature Methods 16, 2019; CC0)."
"$bin/napari-unet" train \
  --images "$data/dsb2018_fluo/images" --labels "$data/dsb2018_fluo/labels" \
  -o "$out" --checkpoint "${out%.safetensors}.ckpt" \
  --task instance --ndim 2 --depth 4 --base-filters 32 \
  --patch 256 --batch 16 --epochs 30 --steps-per-epoch 250 --lr 1e-3 --w0 15 --zoom 0.5 2 \
  --val-fraction 0.1 --seed 2018 --device "${DEVICE:-cuda}" --workers "${WORKERS:-auto}" --half \
  --name nuclei --description "$description"

"$bin/python" "$here/scripts/tune_postprocessing.py" "$out" --seed 2018 --data "$data/dsb2018_fluo"
post=(--seed-threshold 0.6 --foreground-threshold 0.6 --split 1.5 --min-size 20)
"$bin/python" "$here/scripts/finalize_builtin_model.py" "$out" "${post[@]}" \
  --training-labels "$data/dsb2018_fluo/labels" --description "$description"
NAPARI_UNET_BIN=$bin bash "$here/scripts/score_builtin_model.sh" "$out" "$work"
"$bin/python" "$here/scripts/finalize_builtin_model.py" "$out" "${post[@]}" \
  --training-labels "$data/dsb2018_fluo/labels" --test-csv "$work/unet.csv" --baseline-csv "$work/otsu.csv"
