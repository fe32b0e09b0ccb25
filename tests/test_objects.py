"""The per-object table: columns, one row per label, 3D and time series, CSV, CLI ``--table``."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import tifffile

from napari_unet import segment
from napari_unet.cli import main
from napari_unet.inference.labels.objects import (
    COLUMNS,
    least_confident,
    object_table,
    write_csv,
)


def _two_squares(shape=(40, 50)):
    """Labels with two squares (ids 3 and 7), and probabilities sure of 3, unsure of 7."""
    labels = np.zeros(shape, np.int32)
    labels[5:15, 5:15] = 3  # 100 px, centroid (9.5, 9.5)
    labels[20:26, 30:40] = 7  # 60 px, centroid (22.5, 34.5)
    probs = np.zeros((3, *shape), np.float32)
    probs[0] = 1.0
    for value, (fg, interior) in ((3, (0.99, 0.98)), (7, (0.6, 0.4))):
        inside = labels == value
        probs[0][inside] = 1 - fg
        probs[1][inside] = interior
        probs[2][inside] = fg - interior
    return labels, probs


def test_table_has_one_row_per_label_with_the_documented_columns():
    labels, probs = _two_squares()
    image = np.where(labels == 3, 200.0, np.where(labels == 7, 50.0, 0.0))
    table = object_table(labels, probs, image)
    assert tuple(table) == COLUMNS
    assert table["label"].tolist() == [3, 7]
    assert table["area"].tolist() == [100, 60]
    np.testing.assert_allclose(table["centroid_y"], [9.5, 22.5])
    np.testing.assert_allclose(table["centroid_x"], [9.5, 34.5])
    np.testing.assert_allclose(table["mean_intensity"], [200.0, 50.0])
    confidence = table["confidence"]
    assert np.all((confidence >= 0) & (confidence <= 1))
    assert confidence[0] > confidence[1]  # the network was sure of 3, unsure of 7
    assert least_confident(table).tolist() == [1, 0]


def test_3d_labels_add_centroid_z_and_time_series_a_t_column():
    labels, probs = _two_squares()
    volume = np.stack([np.zeros_like(labels), labels, labels])  # Z = 1, 2
    vprobs = np.stack([np.stack([c, c, c]) for c in probs])  # (3, Z, Y, X)
    vprobs[:, 0] = np.array([1.0, 0.0, 0.0]).reshape(3, 1, 1)  # slice 0: background
    table = object_table(volume, vprobs)
    assert list(table) == [
        "label", "area", "centroid_z", "centroid_y", "centroid_x", "mean_intensity", "confidence"
    ]  # fmt: skip
    assert table["area"].tolist() == [200, 120]
    np.testing.assert_allclose(table["centroid_z"], [1.5, 1.5])
    assert table["confidence"][0] > table["confidence"][1]
    assert np.isnan(table["mean_intensity"]).all()  # no image given

    movie = np.stack([labels, np.where(labels == 7, 7, 0)])  # T: 3 and 7, then 7 alone
    series = object_table(movie, axes="TYX")
    assert series["label"].tolist() == [3, 7, 7]
    assert series["t"].tolist() == [0, 0, 1]
    assert np.isnan(series["confidence"]).all()  # no probabilities given


def test_empty_labels_give_an_empty_table_and_csv_round_trips(tmp_path):
    empty = object_table(np.zeros((8, 8), np.int32))
    assert tuple(empty) == COLUMNS and all(v.size == 0 for v in empty.values())
    labels, probs = _two_squares()
    table = object_table(labels, probs, labels.astype(float))
    path = write_csv(table, tmp_path / "objects.csv")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(COLUMNS)
    assert [int(r["label"]) for r in rows] == [3, 7]
    np.testing.assert_allclose([float(r["confidence"]) for r in rows], table["confidence"])
    assert not list(tmp_path.glob(".*tmp"))  # written through a temporary file


def test_segment_returns_the_table_of_its_labels(tiny_model):
    from napari_unet.common.sample import load_sample

    image = load_sample()[0][:64, :80]  # the built-in model on real nuclei
    labels, probs, table = segment(image, diameter=None, return_probabilities=True, table=True)
    ids = np.unique(labels)
    assert ids.size > 3 and table["label"].tolist() == ids[ids != 0].tolist()
    assert isinstance(table, dict)  # a plain dict of columns (napari's features takes it)
    expected = object_table(labels, probs, image.astype(np.float32))
    for name in COLUMNS:
        np.testing.assert_allclose(table[name], expected[name])
    stack = np.stack([image] * 4)
    labels, table = segment(stack, axes="ZYX", z_mode="stitch", diameter=None, table=True)
    assert "centroid_z" in table and table["label"].size == np.unique(labels).size - 1
    np.testing.assert_allclose(table["centroid_z"], 1.5)  # the same nuclei in all 4 slices
    assert segment(image, tiny_model, diameter=None, output="semantic", table=True)[1] is None


def test_images_too_large_for_the_probabilities_in_memory_get_no_table(tiny_model, monkeypatch):
    from napari_unet.inference import pipeline

    monkeypatch.setattr(pipeline, "MAX_TABLE_PIXELS", 48 * 64 - 1)
    image = (np.random.default_rng(0).random((48, 64)) * 255).astype(np.uint8)
    labels, table = segment(image, tiny_model, diameter=None, table=True)
    assert labels.shape == (48, 64) and table is None


@pytest.fixture
def crop(tmp_path):
    """A 96x128 crop of the bundled sample nuclei image, as a TIFF."""
    from napari_unet.common.sample import sample_paths

    image = tifffile.imread(sample_paths()[0])[:96, :128]
    tifffile.imwrite(tmp_path / "crop.tif", image)
    return tmp_path / "crop.tif"


def test_cli_table_writes_one_csv_row_per_label_and_respects_existing_files(crop, tmp_path):
    out = tmp_path / "out"
    args = ["segment", str(crop), "-o", str(out), "--diameter", "none", "--table"]
    assert main(args) == 0
    labels = tifffile.imread(out / "crop_labels.tif")
    with open(out / "crop_objects.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(COLUMNS)
    n_labels = len(np.unique(labels)) - 1
    assert n_labels > 3 and len(rows) == n_labels
    assert sorted(int(r["label"]) for r in rows) == np.unique(labels)[1:].tolist()
    assert all(0.0 <= float(r["confidence"]) <= 1.0 for r in rows)

    before = (out / "crop_objects.csv").stat().st_mtime_ns
    assert main([*args, "--skip-existing"]) == 0  # both exist: skipped
    assert (out / "crop_objects.csv").stat().st_mtime_ns == before
    (out / "crop_objects.csv").unlink()
    assert main([*args, "--skip-existing"]) == 2  # the labels exist, the table does not
    assert main([*args, "--overwrite"]) == 0
    assert (out / "crop_objects.csv").exists()
    assert main([*args, "--overwrite", "--output", "semantic"]) == 2  # no objects to list
