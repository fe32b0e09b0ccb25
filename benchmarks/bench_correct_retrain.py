"""Correct and retrain, measured as a user would meet it (issue 26; not part of the test suite).

Usage (from the repository root; reads ``../shared/data``)::

    python benchmarks/bench_correct_retrain.py --set brightfield --k 1
    python benchmarks/bench_correct_retrain.py --set he --k 3
    python benchmarks/bench_correct_retrain.py --set brightfield --objects 10 --choose confidence

For an image set the built-in model was not trained on, it plays the user of the napari
*Correct and retrain* button, through the dock's own code path:

1. segment every image of the set with the built-in model (the default run: the model,
   channel and inversion it decides);
2. "correct" either the first ``k`` images completely (their ground truth) or, with
   ``--objects N``, ``N`` objects of the first image: the ``N`` least confident objects of
   the result (``--choose confidence``, the dock's *Where to correct first* list) or ``N`` at
   random (``--choose random``), each replaced by the ground-truth objects it overlaps, the
   rest of the result left as predicted and only the corrected area (plus a margin) counted as
   annotated, exactly as the dock's :func:`correction_region` does;
3. retrain with the dock's recipe (``RETRAIN_*`` in ``_napari/train/_train_settings.py``: the
   decoder learns at 1e-3 for 2 x 10 batches of 8 patches, on the image as the network saw
   it), holding back a strip of a single image, or one whole image of several, to judge it;
4. score the *other* images of the set before and after: AP@0.5, AP@0.75, mean AP. "after
   (used)" is what the dock then segments with: the new model only if it beat its parent on
   the held-back pixels, else the parent; "after (new)" is the new model whatever the verdict.

Sets: ``brightfield`` (the 16 greyscale brightfield 1024x1024 images of
``dsb2018_other``), ``he`` (the 12 H&E images of the DSB stage-1 test set; by kind, ``he680``: the 8 slides of
512x680, ``he348``: the 4 of 524x348, another tissue and magnification), and DSB stage-1
test fluorescence groups by size (``fluo256``: 256x256, ``fluo512``: 512x640, ``fluo520``:
520x696, ``wide``: 519x253, ``strips``: 519x161/162, ``fluo260``: 260x347, ``fluo348``:
520x348), 4 near-duplicates of training images excluded.
Times: wall clock and CPU seconds of the retraining alone (a shared machine: compare CPU).
"""

from __future__ import annotations

import argparse
import csv
import json
import threading
import time
from pathlib import Path

import numpy as np
import tifffile
import torch

from napari_unet import metrics, segment
from napari_unet._napari.segment._retrain import _as_the_network_saw_them, correction_region
from napari_unet._napari.train._train_inputs import PairSource
from napari_unet._napari.train._train_job import HeldBackScores, retrain_augment, training_job
from napari_unet._napari.train._train_settings import (
    RETRAIN_EPOCHS,
    RETRAIN_LAYERS,
    RETRAIN_LR,
    RETRAIN_STEPS,
)
from napari_unet.common.progress import run_to_end
from napari_unet.inference.pipeline import model_input
from napari_unet.training.config import TrainConfig

ROOT = Path(__file__).resolve().parents[2] / "shared" / "data"
SIZES = {"fluo256": [("256", "256")], "fluo512": [("512", "640")], "fluo520": [("520", "696")],
         "wide": [("519", "253")], "strips": [("519", "161"), ("519", "162")],
         "fluo260": [("260", "347")], "fluo348": [("520", "348")]}  # fmt: skip
HE_SIZES = {"he680": [("512", "680")], "he348": [("524", "348")]}


def image_set(name: str) -> tuple[Path, list[str]]:
    """The folder and the image ids of a set, in manifest order."""
    if name == "brightfield":
        folder = ROOT / "dsb2018_other"
        rows = list(csv.DictReader(open(folder / "manifest.csv")))
        return folder, [r["id"] for r in rows if r["modality"] == "brightfield_gray"]
    folder = ROOT / "dsb2018_stage1_test"
    excluded = set((folder / "exclude_duplicates_of_train.txt").read_text().split())
    rows = [r for r in csv.DictReader(open(folder / "manifest.csv")) if r["id"] not in excluded]
    stained = [r for r in rows if r["modality"].startswith("brightfield_color")]
    if name == "he":
        return folder, [r["id"] for r in stained]
    if name in HE_SIZES:
        return folder, [r["id"] for r in stained if (r["height"], r["width"]) in HE_SIZES[name]]
    return folder, [
        r["id"]
        for r in rows
        if (r["height"], r["width"]) in SIZES[name] and r["modality"] == "fluorescence"
    ]


def read(folder: Path, image_id: str) -> tuple[np.ndarray, np.ndarray]:
    image = tifffile.imread(folder / "images" / f"{image_id}.tif")
    truth = tifffile.imread(folder / "labels" / f"{image_id}.tif").astype(np.int32)
    return image, truth


def scores(model, items) -> np.ndarray:
    """Per image: AP@0.5, AP@0.75 and mean AP (0.5:0.95) of the default run of ``model``."""
    out = []
    for image, truth in items:
        ap = metrics.average_precision(truth, np.asarray(segment(image, model)))
        out.append((ap.scores[0], ap.scores[5], ap.mean))
    return np.asarray(out)


def corrected_objects(
    image: np.ndarray, truth: np.ndarray, n: int, choose: str, seed: int = 0
) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """The result of the default run with ``n`` objects corrected from the ground truth.

    Returns the corrected labels, the annotated region (:func:`correction_region`) and what
    Segment decided (the layer metadata's ``choice``).
    """
    from napari_unet.inference.pipeline import segment_iter

    events = []
    labels = np.asarray(run_to_end(segment_iter(image, None, table=True), events.append))
    done = events[-1]
    table, choice = done.table, done.report.choice.as_metadata()
    ids = np.asarray(table["label"])
    if choose == "confidence":
        picked = ids[np.argsort(np.asarray(table["confidence"]))[:n]]
    else:
        picked = np.random.default_rng(seed).choice(ids, size=min(n, ids.size), replace=False)
    corrected = labels.copy()
    changed = np.zeros(labels.shape, bool)
    next_id = int(labels.max()) + 1
    for label in picked:
        mine = labels == label
        touched = np.unique(truth[mine])
        area = mine | np.isin(truth, touched[touched != 0])
        corrected[area] = 0
        changed |= area
        for t in touched[touched != 0]:
            corrected[truth == t] = next_id
            next_id += 1
    return corrected, correction_region(corrected, changed), choice


def retrain(sources: list[PairSource], lr=RETRAIN_LR, layers=RETRAIN_LAYERS, steps=RETRAIN_STEPS):
    """The dock's retraining on ``sources``: (result, HeldBackScores, parent, wall s, cpu s)."""
    parent = model_input(sources[0].image, None, axes=sources[0].choice["axes"])[1]
    sources, prepared = _as_the_network_saw_them(sources, parent)
    patch = min(128, *(min(s.labels.shape[-2:]) for s in sources))
    config = TrainConfig(
        task="instance",
        epochs=RETRAIN_EPOCHS,
        steps_per_epoch=steps,
        learning_rate=lr,
        patch_size=patch,
        train_layers=layers,
        augment=retrain_augment(parent),
    )
    t0, c0 = time.perf_counter(), time.process_time()
    gen = training_job(
        sources, config, threading.Event(), init=parent, compare_with=parent,
        invert="no" if prepared else "auto",
    )  # fmt: skip
    verdicts = [HeldBackScores(None, None, 0, "no comparison")]

    def keep(event) -> None:
        if isinstance(event, HeldBackScores):
            verdicts.append(event)

    result = run_to_end(gen, keep)
    verdict = verdicts[-1]
    return result, verdict, parent, time.perf_counter() - t0, time.process_time() - c0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--set", default="brightfield", choices=["brightfield", "he", *HE_SIZES, *SIZES]
    )
    parser.add_argument("--k", type=int, default=1, help="images corrected completely")
    parser.add_argument("--objects", type=int, default=0, help="objects corrected on one image")
    parser.add_argument("--choose", choices=["confidence", "random"], default="confidence")
    parser.add_argument("--limit", type=int, default=0, help="score on this many others only")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="append the figures to this JSON-lines file")
    parser.add_argument("--lr", type=float, default=RETRAIN_LR, help="(ablation) learning rate")
    parser.add_argument("--layers", default=RETRAIN_LAYERS, choices=["all", "decoder"])
    parser.add_argument("--steps", type=int, default=RETRAIN_STEPS, help="batches per epoch")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    folder, ids = image_set(args.set)
    k = 1 if args.objects else args.k
    corrected_ids, others = ids[:k], ids[k:]
    if args.limit:
        others = others[: args.limit]
    items = [read(folder, i) for i in others]
    what = (
        f"{args.objects} objects of 1 image by {args.choose}"
        if args.objects
        else f"{k} whole image{'s' if k > 1 else ''}"
    )
    print(f"{args.set}: corrected {what}; scored on {len(items)} other images")
    before = scores(None, items)

    sources = []
    for image_id in corrected_ids:
        image, truth = read(folder, image_id)
        if args.objects:
            labels, region, choice = corrected_objects(image, truth, args.objects, args.choose)
        else:
            labels, region = truth, None
            choice = model_input(image, None)[2].as_metadata()
        sources.append(PairSource(image_id, f"{image_id} corrected", image, labels, region,
                                  False, choice))  # fmt: skip
    result, verdict, parent, wall, cpu = retrain(sources, args.lr, args.layers, args.steps)
    new = scores(result.model, items)
    used = new if verdict.beats else before
    b, n, u = before.mean(0), new.mean(0), used.mean(0)
    print(f"  retrained {wall:.0f} s wall, {cpu:.0f} s CPU; parent {parent.card.get('name')}; "
          f"held-back verdict: {verdict.describe('new', parent.card.get('name'))}")  # fmt: skip
    for label, s in (("before", b), ("after (new)", n), ("after (used)", u)):
        print(f"  {label:13s} AP@0.5 {s[0]:.3f}  AP@0.75 {s[1]:.3f}  mean AP {s[2]:.3f}")
    print(f"  gain (used) AP@0.5 {u[0] - b[0]:+.3f}, mean AP {u[2] - b[2]:+.3f}")
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps({"set": args.set, "k": k, "objects": args.objects,
                                "choose": args.choose, "n_scored": len(items),
                                "before": b.tolist(), "new": n.tolist(), "used": u.tolist(),
                                "beats": verdict.beats, "wall_s": wall, "cpu_s": cpu}) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
