"""Every image a microscopist opens: colour, inverted, multichannel, H&E and brightfield.

Usage (from the repository root)::

    python benchmarks/bench_modalities.py [--sets encodings he brightfield] [--limit N]
                                          [--threads 2] [--csv out.csv]

Each image is written to a file the way a user has it and read back through the readers the
CLI uses (``napari_unet.common.readers``), then segmented with the default run (no model, no
axes, ``diameter="auto"``), exactly as ``napari-unet segment FILE`` does. Scores are the mean
over images of the DSB 2018 average precision (TP / (TP + FP + FN)) at IoU 0.5 and 0.75, and
its mean over 0.5:0.95.

``encodings``: the 49 DSB 2018 stage-1 test fluorescence images (the 4 duplicates of training
images left out), each as the grey TIFF, an RGB PNG, inverted (255 - image, a TIFF), and a
2-channel ImageJ CYX TIFF whose first channel is a distractor (a blurred cytoplasm-like stain
around the nuclei plus noise), segmented with ``channel=1`` (``--channel 1``). The out-of-domain
warning is counted on the grey runs.

``he``: the 12 H&E images of the stage-1 test set (never trained on; the H&E model learnt from
the 107 of ``dsb2018_other``), default run, the same slides saved as 16-bit RGB TIFFs, and
the classical baseline on their haematoxylin channel (Otsu + distance-transform watershed,
``scripts/baseline_otsu_watershed``).

``brightfield``: the 16 grey brightfield images of ``dsb2018_other`` (dark nuclei inside grey
cells on a bright background), before (the fluorescence model on the image as it is,
``invert="no"``) and after (the default run). The warning is counted on both.
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
import torch
from scipy import ndimage as ndi
from skimage.io import imsave

from napari_unet import segment
from napari_unet.common.readers import channel_names, read_image
from napari_unet.inference.images.stains import haematoxylin
from napari_unet.metrics import average_precision

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data"
sys.path.insert(0, str(ROOT / "scripts"))
from baseline_otsu_watershed import otsu_watershed  # noqa: E402

THRESHOLDS = tuple(np.round(np.arange(0.5, 1.0, 0.05), 2))


def manifest(folder: Path, keep) -> list[str]:
    excluded_file = folder / "exclude_duplicates_of_train.txt"
    excluded = set(excluded_file.read_text().split()) if excluded_file.exists() else set()
    with open(folder / "manifest.csv") as f:
        return [r["id"] for r in csv.DictReader(f) if keep(r) and r["id"] not in excluded]


def scores(truth: np.ndarray, labels: np.ndarray) -> tuple[float, float, float]:
    ap = average_precision(truth, labels, THRESHOLDS)
    return ap.scores[0], ap.scores[5], ap.mean


def run_file(path: Path, **kwargs):
    """Read ``path`` as the CLI does and segment it with the default run."""
    image, axes = read_image(path)
    events = []
    started = time.perf_counter()
    labels = segment(
        image, axes=axes, channel_names=channel_names(path), progress=events.append, **kwargs
    )
    return labels, events[-1].report, time.perf_counter() - started


def distractor(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A cytoplasm-like second stain: the nuclei blurred wide, plus noise, in uint8."""
    wide = ndi.gaussian_filter(image.astype(np.float32), 8)
    wide = wide / max(float(wide.max()), 1e-6) * 180 + rng.normal(0, 12, image.shape)
    return np.clip(wide, 0, 255).astype(np.uint8)


def encodings(tmp: Path, ids: list[str], rows: list[dict]) -> None:
    folder = DATA / "dsb2018_stage1_test"
    rng = np.random.default_rng(0)
    for n, i in enumerate(ids):
        image = tifffile.imread(folder / "images" / f"{i}.tif")
        truth = tifffile.imread(folder / "labels" / f"{i}.tif")
        files = {
            "grey": (tmp / f"{i}.tif", {}),
            "rgb_png": (tmp / f"{i}.png", {}),
            "inverted": (tmp / f"{i}_inv.tif", {}),
            "two_channel": (tmp / f"{i}_cyx.tif", {"channel": 1}),
        }
        tifffile.imwrite(files["grey"][0], image)
        imsave(files["rgb_png"][0], np.stack([image] * 3, axis=-1), check_contrast=False)
        tifffile.imwrite(files["inverted"][0], (255 - image.astype(np.int32)).astype(np.uint8))
        stack = np.stack([distractor(image, rng), image])
        tifffile.imwrite(files["two_channel"][0], stack, imagej=True, metadata={"axes": "CYX"})
        for kind, (path, kwargs) in files.items():
            labels, report, seconds = run_file(path, **kwargs)
            rows.append(_row("encodings", kind, i, truth, labels, report, seconds))
        print(f"encodings {n + 1}/{len(ids)}", file=sys.stderr, flush=True)


def he(tmp: Path, ids: list[str], rows: list[dict]) -> None:
    folder = DATA / "dsb2018_stage1_test"
    for i in ids:
        path = folder / "images" / f"{i}.tif"
        truth = tifffile.imread(folder / "labels" / f"{i}.tif")
        labels, report, seconds = run_file(path)
        rows.append(_row("he", "default", i, truth, labels, report, seconds))
        rgb = tifffile.imread(path)
        sixteen = tmp / f"{i}_16bit.tif"  # the same slide as a 16-bit RGB TIFF
        tifffile.imwrite(sixteen, rgb[..., :3].astype(np.uint16) * 257, photometric="rgb")
        labels, report, seconds = run_file(sixteen)
        rows.append(_row("he", "rgb_16bit_tiff", i, truth, labels, report, seconds))
        started = time.perf_counter()
        baseline = otsu_watershed(haematoxylin(rgb, channel_axis=-1))
        rows.append(
            _row("he", "otsu_haematoxylin", i, truth, baseline, None, time.perf_counter() - started)
        )


def brightfield(ids: list[str], rows: list[dict]) -> None:
    folder = DATA / "dsb2018_other"
    for i in ids:
        path = folder / "images" / f"{i}.tif"
        truth = tifffile.imread(folder / "labels" / f"{i}.tif")
        for kind, kwargs in (("as_is", {"invert": "no", "model": "nuclei"}), ("default", {})):
            labels, report, seconds = run_file(path, **kwargs)
            rows.append(_row("brightfield", kind, i, truth, labels, report, seconds))


def _row(group, kind, image_id, truth, labels, report, seconds) -> dict:
    ap50, ap75, mean_ap = scores(truth, labels)
    row = {
        "set": group,
        "kind": kind,
        "id": image_id[:8],
        "ap50": ap50,
        "ap75": ap75,
        "mean_ap": mean_ap,
        "seconds": seconds,
        "warning": "",
        "decided": "",
        "doubt": "",
        "background": "",
    }
    if report is not None:
        row["warning"] = int(report.warning is not None)
        row["decided"] = report.choice.describe()
        row["doubt"] = "" if report.doubt is None else round(report.doubt, 3)
        row["background"] = round(report.background, 3)
    return row


def summary(rows: list[dict]) -> None:
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["set"], r["kind"]), []).append(r)
    print(f"{'set':12} {'kind':18} {'n':>3} {'AP@0.5':>7} {'AP@0.75':>7} {'mAP':>6} "
          f"{'warned':>6} {'s/image':>7}")  # fmt: skip
    for (group, kind), rs in groups.items():
        mean = {k: np.mean([r[k] for r in rs]) for k in ("ap50", "ap75", "mean_ap", "seconds")}
        warned = sum(1 for r in rs if r["warning"] == 1)
        print(
            f"{group:12} {kind:18} {len(rs):3d} {mean['ap50']:7.3f} {mean['ap75']:7.3f} "
            f"{mean['mean_ap']:6.3f} {warned:6d} {mean['seconds']:7.2f}"
        )
    grey = {r["id"]: r for r in groups.get(("encodings", "grey"), [])}
    for kind in ("rgb_png", "inverted", "two_channel"):
        rs = groups.get(("encodings", kind), [])
        if rs and grey:
            diff = {
                k: np.mean([r[k] - grey[r["id"]][k] for r in rs])
                for k in ("ap50", "ap75", "mean_ap")
            }
            print(
                f"encodings {kind} minus the grey run's: AP@0.5 {diff['ap50']:+.3f}, "
                f"AP@0.75 {diff['ap75']:+.3f}, mean AP {diff['mean_ap']:+.3f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sets", nargs="+", default=["encodings", "he", "brightfield"],
        choices=["encodings", "he", "brightfield"],
    )  # fmt: skip
    parser.add_argument("--limit", type=int, default=0, help="only the first N images per set")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--csv", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    limit = args.limit or None
    test = DATA / "dsb2018_stage1_test"
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        if "encodings" in args.sets:
            ids = manifest(test, lambda r: r["modality"] == "fluorescence")[:limit]
            encodings(Path(tmp), ids, rows)
        if "he" in args.sets:
            he(Path(tmp), manifest(test, lambda r: r["channels"] == "3")[:limit], rows)
        if "brightfield" in args.sets:
            other = DATA / "dsb2018_other"
            brightfield(
                manifest(other, lambda r: r["modality"] == "brightfield_gray")[:limit], rows
            )
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    summary(rows)


if __name__ == "__main__":
    main()
