#!/usr/bin/env bash
# Score a nuclei model (default: the built-in one) and the classical baseline on the held-out
# test images: the 49 fluorescence images of DSB 2018 stage-1 test minus the 4 duplicates of
# training images. Prints both tables of `napari-unet evaluate`; the CSVs land in WORKDIR.
# Usage: bash scripts/score_builtin_model.sh [MODEL] [WORKDIR]
# (ENGINE=openvino-int8 bash scripts/... scores the model as that engine runs it; default auto)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
model=${1:-$here/src/napari_unet/models/nuclei.safetensors}
work=${2:-$(mktemp -d)}
bin=${NAPARI_UNET_BIN:-$here/.venv/bin}

"$bin/python" "$here/scripts/prepare_test_split.py" "$work/test"
"$bin/napari-unet" segment "$work"/test/images/*.tif -o "$work/unet" --model "$model" --engine "${ENGINE:-auto}" --overwrite >/dev/null
echo "== U-Net ($model)"
"$bin/napari-unet" evaluate --gt "$work/test/labels" --pred "$work/unet" --csv "$work/unet.csv" | tail -3
"$bin/python" "$here/scripts/baseline_otsu_watershed.py" "$work/test/images" "$work/otsu" >/dev/null
echo "== Otsu threshold + distance-transform watershed (scikit-image)"
"$bin/napari-unet" evaluate --gt "$work/test/labels" --pred "$work/otsu" --csv "$work/otsu.csv" | tail -3
echo "CSV files: $work/unet.csv $work/otsu.csv"
