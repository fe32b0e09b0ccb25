"""Evaluation tables (evaluate_pair, folders, CSV) and ``napari-unet evaluate``."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import tifffile

from napari_unet import metrics
from napari_unet.cli import main
from napari_unet.evaluation.folders import evaluate_folders, match_files, write_csv
from napari_unet.evaluation.pairs import evaluate_pair, summary_rows


def _labels(seed: int, shift: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.zeros((48, 48), np.uint16)
    for k in range(1, 9):
        y, x = rng.integers(0, 40, 2)
        img[y : y + 8, x : x + 8] = k
    return np.roll(img, shift, axis=1)


@pytest.fixture
def folders(tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir()
    pred.mkdir()
    for i, name in enumerate(["a", "b", "c"]):
        tifffile.imwrite(gt / f"{name}.tif", _labels(i))
    tifffile.imwrite(pred / "a.tif", _labels(0, shift=1))
    tifffile.imwrite(pred / "b_labels.tif", _labels(1, shift=3))  # suffix written by `segment`
    tifffile.imwrite(pred / "z.tif", _labels(5))
    return gt, pred


def test_match_files_by_name(folders):
    gt, pred = folders
    pairs, un_gt, un_pred = match_files(gt, pred)
    assert [(n, g.name, p.name) for n, g, p in pairs] == [
        ("a", "a.tif", "a.tif"),
        ("b", "b.tif", "b_labels.tif"),
    ]
    assert [p.name for p in un_gt] == ["c.tif"] and [p.name for p in un_pred] == ["z.tif"]


def test_cli_prints_table_and_writes_full_precision_csv(folders, tmp_path, capsys):
    gt, pred = folders
    out = tmp_path / "res" / "scores.csv"
    assert main(["evaluate", "--gt", str(gt), "--pred", str(pred), "--csv", str(out)]) == 0
    stdout, stderr = capsys.readouterr()
    lines = stdout.splitlines()
    assert lines[0].split()[:3] == ["image", "n_true", "n_pred"]
    assert [ln.split()[0] for ln in lines[1:5]] == ["a", "b", "mean", "pooled"]
    assert "c.tif" in stderr and "z.tif" in stderr  # unmatched files listed, not fatal

    rows = list(csv.DictReader(out.open()))
    assert [r["image"] for r in rows] == ["a", "b", "mean", "pooled"]
    expected = metrics.match_instances(_labels(1), _labels(1, shift=3))
    b = rows[1]
    assert (int(b["tp"]), int(b["fp"]), int(b["fn"])) == (expected.tp, expected.fp, expected.fn)
    assert float(b["panoptic_quality"]) == expected.panoptic_quality  # full precision
    assert float(b["ap"]) == metrics.average_precision(_labels(1), _labels(1, shift=3)).mean
    assert float(b["pixel_dice"]) == metrics.dice(_labels(1), _labels(1, shift=3))
    # the stdout table shows the same value with 3 decimals
    assert f"{expected.panoptic_quality:.3f}" in lines[2]
    a = rows[0]
    assert float(rows[2]["ap"]) == pytest.approx((float(a["ap"]) + float(b["ap"])) / 2)
    assert int(rows[3]["tp"]) == int(a["tp"]) + int(b["tp"])


def test_cli_single_files_and_thresholds(folders, capsys):
    gt, pred = folders
    rc = main(
        [
            "evaluate",
            "--gt",
            str(gt / "a.tif"),
            "--pred",
            str(pred / "a.tif"),
            "--iou-thresholds",
            "0.5",
            "0.9",
        ]
    )
    assert rc == 0
    header = capsys.readouterr().out.splitlines()[0].split()
    assert header[-3:] == ["ap@0.50", "ap@0.90", "ap"]


def test_cli_user_errors_exit_2(tmp_path, capsys):
    (tmp_path / "g").mkdir()
    (tmp_path / "p").mkdir()
    tifffile.imwrite(tmp_path / "g" / "x.tif", np.zeros((8, 8), np.uint8))
    assert main(["evaluate", "--gt", str(tmp_path / "g"), "--pred", str(tmp_path / "p")]) == 2
    assert "no file names match" in capsys.readouterr().err
    tifffile.imwrite(tmp_path / "p" / "x.tif", np.zeros((8, 9), np.uint8))
    assert main(["evaluate", "--gt", str(tmp_path / "g"), "--pred", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err
    assert "x:" in err and "(8, 8)" in err and "(8, 9)" in err and "Traceback" not in err


def test_cli_semantic_per_slice(tmp_path, capsys):
    gt = np.zeros((2, 8, 8), np.uint8)
    gt[:, :4] = 1
    gt[:, 4:6] = 2
    pred = gt.copy()
    pred[1, 4:6] = 1
    tifffile.imwrite(tmp_path / "g.tif", gt)
    tifffile.imwrite(tmp_path / "p.tif", pred)
    rc = main(["evaluate", "--gt", str(tmp_path / "g.tif"), "--pred", str(tmp_path / "p.tif"),
               "--task", "semantic", "--axis", "0", "--csv", str(tmp_path / "s.csv")])  # fmt: skip
    assert rc == 0
    rows = list(csv.DictReader((tmp_path / "s.csv").open()))
    by = {(r["image"], r["slice"], r["class"]): r for r in rows}
    assert float(by[("g", "0", "2")]["iou"]) == 1.0
    assert float(by[("g", "1", "2")]["recall"]) == 0.0
    assert float(by[("g", "all", "2")]["iou"]) == pytest.approx(0.5)
    assert float(by[("pooled", "all", "micro")]["precision"]) == pytest.approx(112 / 128)


def test_evaluate_pair_error_map_and_pooled_slices():
    gt = np.zeros((2, 20, 20), np.int32)
    gt[0, 0:6, 0:6] = 1  # matched (pred 5 covers 5 of 6 columns)
    gt[0, 10:14, 10:14] = 2  # missed
    gt[1, 2:6, 2:6] = 3
    pred = np.zeros_like(gt)
    pred[0, 0:6, 0:5] = 5
    pred[0, 15:18, 0:3] = 6  # false positive object
    pred[1, 2:6, 2:6] = 7
    res = evaluate_pair(gt, pred, axis=0, errors=True)
    e = res.errors
    assert e.shape == gt.shape and e.dtype == np.uint8
    assert np.all(e[0, 15:18, 0:3] == 1) and np.all(e[0, 10:14, 10:14] == 2)
    assert np.all(e[0, 0:6, 5] == 4) and np.count_nonzero(e == 3) == 0
    assert np.count_nonzero(e[1]) == 0
    per, total = res.records[:2], res.records[2]
    assert [r["slice"] for r in res.records] == [0, 1, "all"]
    assert total["tp"] == per[0]["tp"] + per[1]["tp"] == 2
    assert (total["fp"], total["fn"]) == (1, 1)
    assert total["pixel_dice"] == metrics.dice(gt, pred)
    assert [r["image"] for r in summary_rows([res, res])] == ["mean", "pooled"]


def test_evaluate_folders_and_atomic_csv(folders, tmp_path):
    gt, pred = folders
    result = evaluate_folders(gt, pred, thresholds=[0.5])
    assert [r["image"] for r in result.records] == ["a", "b", "mean", "pooled"]
    path = write_csv(result.records, tmp_path / "t.csv")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert len(path.read_text().splitlines()) == 5
