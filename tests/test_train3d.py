"""3D training end to end: Z stacks with 3D labels, anisotropic patches, sparse annotation."""

from __future__ import annotations

import numpy as np
import tifffile

from napari_unet import UNet, load_model, segment, train
from napari_unet.cli import main
from napari_unet.metrics import average_precision
from napari_unet.training.data.targets import BOUNDARY, INTERIOR, instance_to_classes
from synthetic3d import ellipsoid_stack


def _sparse(labels: np.ndarray, every: int = 3) -> np.ndarray:
    """Labels with only every ``every``-th slice annotated; the rest -1 (unannotated)."""
    out = labels.astype(np.int32)
    out[np.arange(len(out)) % every != 0] = -1
    return out


def test_an_annotated_slice_between_unannotated_ones_keeps_its_interior():
    labels = np.zeros((3, 12, 12), np.int32)
    labels[:, 2:10, 2:10] = 1
    valid = np.zeros(labels.shape, bool)
    valid[1] = True
    classes = instance_to_classes(np.where(valid, labels, 0), valid)
    assert (classes[1, 3:9, 3:9] == INTERIOR).all()  # z neighbours are unannotated, not rims
    assert (classes[1, 2, 2:10] == BOUNDARY).all()  # the in-plane rim still is one
    dense = instance_to_classes(np.where(valid, labels, 0))
    assert (dense[1] == INTERIOR).sum() <= 1  # before: all rim but the kept central pixel


def test_a_tiny_3d_model_from_sparse_slices_segments_far_better_than_chance():
    pairs = [ellipsoid_stack((12, 48, 48), 2.0, radius=(5, 7), seed=s) for s in (10, 11)]
    test_image, truth = ellipsoid_stack((12, 48, 48), 2.0, radius=(5, 7), seed=123)
    config = {
        "ndim": 3, "patch_size": (8, 32, 32), "depth": 1, "base_filters": 8, "epochs": 1,
        "steps_per_epoch": 30, "batch_size": 4, "learning_rate": 0.01, "seed": 0,
        "tune_postprocessing": False,
    }  # fmt: skip
    result = train(
        [image for image, _ in pairs],
        [_sparse(labels) for _, labels in pairs],  # a third of the slices annotated
        val_images=[pairs[0][0]],
        val_labels=[pairs[0][1]],
        ignore_label=-1,
        **config,
    )
    trained = average_precision(truth, segment(test_image, result.model, diameter=None), [0.5])
    chance_model = UNet(1, 3, ndim=3, depth=1, base_filters=8).eval()
    chance_model.card = dict(result.model.card)
    chance = average_precision(truth, segment(test_image, chance_model, diameter=None), [0.5])
    assert result.model.ndim == 3
    assert trained.mean >= 0.6 and trained.mean >= chance.mean + 0.5, (trained, chance)


def test_cli_trains_a_3d_model_from_z_stacks_with_anisotropic_patches(tmp_path, capsys):
    for folder in ("images", "labels"):
        (tmp_path / folder).mkdir()
    for s in range(2):
        image, labels = ellipsoid_stack((12, 40, 40), 3.0, radius=(5, 7), seed=s)
        tifffile.imwrite(tmp_path / "images" / f"s{s}.tif", image)
        tifffile.imwrite(tmp_path / "labels" / f"s{s}.tif", labels)
    out = tmp_path / "m3d.safetensors"
    code = main(
        ["train", "--images", str(tmp_path / "images"), "--labels", str(tmp_path / "labels"),
         "-o", str(out), "--patch", "8", "32", "32", "--depth", "1", "--base-filters", "2",
         "--epochs", "1", "--steps-per-epoch", "1", "--batch", "2", "--no-tune"]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0, err
    assert "training a 3D network" in err  # --ndim 3 from the labels
    model = load_model(out)
    assert model.ndim == 3
    assert tuple(model.card["provenance"]["training"]["patch_size"]) == (8, 32, 32)
