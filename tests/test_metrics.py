"""napari_unet.metrics: hand-computed cases, scikit-learn agreement, instance matching."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
from sklearn import metrics as skm

from napari_unet import metrics
from napari_unet.common.errors import ShapeError, UserInputError

BINARY = (metrics.precision, metrics.recall, metrics.iou, metrics.dice)


@pytest.fixture(autouse=True)
def _warnings_are_errors():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning (0/0) anywhere
        yield


# ----------------------------------------------------------------------------- binary
def test_binary_hand_computed():
    gt = np.array([[1, 1, 1, 0], [0, 0, 0, 0]])
    pred = np.array([[1, 1, 0, 1], [1, 0, 0, 0]])  # TP 2, FP 2, FN 1
    assert metrics.binary_counts(gt, pred) == (2, 2, 1)
    assert metrics.precision(gt, pred) == pytest.approx(2 / 4)
    assert metrics.recall(gt, pred) == pytest.approx(2 / 3)
    assert metrics.iou(gt, pred) == pytest.approx(2 / 5)
    assert metrics.dice(gt, pred) == pytest.approx(4 / 7)
    assert metrics.dice_loss(gt, pred) == pytest.approx(3 / 7)
    assert metrics.jaccard is metrics.iou and metrics.f1 is metrics.dice


def test_binary_labels_count_as_foreground():
    gt = np.array([[0, 5, 5, 9]], dtype=np.uint32)
    pred = np.array([[0, 1, 0, 1]], dtype=bool)
    assert metrics.dice(gt, pred) == pytest.approx(2 * 2 / (3 + 2))


@pytest.mark.parametrize(
    ("gt", "pred", "expected"),
    [
        (np.zeros((4, 4)), np.zeros((4, 4)), 1.0),  # both empty: perfect agreement
        (np.ones((4, 4)), np.zeros((4, 4)), 0.0),  # empty prediction
        (np.zeros((4, 4)), np.ones((4, 4)), 0.0),  # empty truth
    ],
)
def test_binary_edge_cases(gt, pred, expected):
    for f in BINARY:
        value = f(gt.astype(np.uint8), pred.astype(np.uint8))
        assert value == expected, f.__name__
        assert isinstance(value, float)
    assert metrics.dice_loss(gt.astype(int), pred.astype(int)) == 1.0 - expected


def test_binary_region_ignores_outside_pixels():
    rng = np.random.default_rng(1)
    gt, pred = rng.integers(0, 2, (2, 20, 20))
    region = np.zeros((20, 20), bool)
    region[5:15, 2:12] = True
    for f in BINARY:
        assert f(gt, pred, region=region) == f(gt[5:15, 2:12], pred[5:15, 2:12])


@pytest.mark.parametrize("seed", range(5))
def test_binary_agrees_with_sklearn(seed):
    rng = np.random.default_rng(seed)
    shape = (17, 23) if seed % 2 else (5, 9, 11)
    gt = rng.random(shape) < 0.4
    pred = rng.random(shape) < 0.5
    y, p = gt.ravel(), pred.ravel()
    assert metrics.precision(gt, pred) == pytest.approx(skm.precision_score(y, p))
    assert metrics.recall(gt, pred) == pytest.approx(skm.recall_score(y, p))
    assert metrics.iou(gt, pred) == pytest.approx(skm.jaccard_score(y, p))
    assert metrics.dice(gt, pred) == pytest.approx(skm.f1_score(y, p))


# ----------------------------------------------------------------------------- errors
def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ShapeError, match=r"\(4, 5\).*\(4, 6\)"):
        metrics.dice(np.zeros((4, 5), int), np.zeros((4, 6), int))


def test_rank_mismatch_names_both_shapes():
    with pytest.raises(ShapeError, match=r"ranks.*\(4, 5\).*\(1, 4, 5\)"):
        metrics.match_instances(np.zeros((4, 5), int), np.zeros((1, 4, 5), int))


def test_float_labels_are_rejected_with_both_dtypes():
    with pytest.raises(UserInputError, match=r"prediction.*float32.*int64.*float32"):
        metrics.iou(np.zeros((3, 3), np.int64), np.zeros((3, 3), np.float32))


def test_negative_labels_and_bad_region_are_rejected():
    with pytest.raises(UserInputError, match="negative"):
        metrics.match_instances(-np.ones((3, 3), int), np.zeros((3, 3), int))
    with pytest.raises(ShapeError, match="region"):
        metrics.dice(np.zeros((3, 3), int), np.zeros((3, 3), int), region=np.ones((2, 3), bool))
    with pytest.raises(UserInputError, match="thresholds"):
        metrics.average_precision(np.zeros((3, 3), int), np.zeros((3, 3), int), thresholds=[1.5])


# ----------------------------------------------------------------------------- multi-class
@pytest.mark.parametrize("seed", range(4))
def test_multiclass_agrees_with_sklearn(seed):
    rng = np.random.default_rng(seed)
    gt = rng.integers(0, 4, (30, 31))
    pred = np.where(rng.random(gt.shape) < 0.6, gt, rng.integers(0, 4, gt.shape))
    y, p = gt.ravel(), pred.ravel()
    for classes in ([0, 1, 2, 3], [1, 2, 3]):
        s = metrics.class_scores(gt, pred, classes=classes)
        np.testing.assert_array_equal(s.classes, classes)
        for ours, sk in (("precision", skm.precision_score), ("recall", skm.recall_score),
                         ("iou", skm.jaccard_score), ("dice", skm.f1_score)):  # fmt: skip
            np.testing.assert_allclose(getattr(s, ours), sk(y, p, labels=classes, average=None))
            assert s.macro[ours] == pytest.approx(sk(y, p, labels=classes, average="macro"))
            assert s.micro[ours] == pytest.approx(sk(y, p, labels=classes, average="micro"))
    classes, matrix = metrics.confusion_matrix(gt, pred)
    np.testing.assert_array_equal(matrix, skm.confusion_matrix(y, p, labels=classes))


def test_multiclass_ignore_label_and_huge_class_ids():
    rng = np.random.default_rng(7)
    gt = rng.choice([0, 3, 2**31 - 5, 255], size=(20, 20))
    pred = rng.choice([0, 3, 2**31 - 5], size=(20, 20))
    keep = (gt != 255).ravel()
    y, p = gt.ravel()[keep], pred.ravel()[keep]
    s = metrics.class_scores(gt, pred, ignore_label=255)
    np.testing.assert_array_equal(s.classes, [0, 3, 2**31 - 5])
    np.testing.assert_allclose(s.iou, skm.jaccard_score(y, p, labels=s.classes, average=None))
    assert s.micro["dice"] == pytest.approx(skm.f1_score(y, p, average="micro"))


def test_multiclass_absent_class_and_empty_images():
    gt = np.array([[0, 1], [1, 1]])
    s = metrics.class_scores(gt, gt, classes=[1, 2])  # class 2 in neither image
    np.testing.assert_array_equal(s.dice, [1.0, 1.0])
    s = metrics.class_scores(gt, np.zeros_like(gt), classes=[1])
    assert s.precision[0] == 0.0 and s.recall[0] == 0.0 and s.macro["dice"] == 0.0


# ----------------------------------------------------------------------------- instances
def _square(img, label, y, x, size=10):
    img[y : y + size, x : x + size] = label


def test_identical_instances_are_perfect():
    gt = np.zeros((40, 40), np.uint16)
    _square(gt, 3, 2, 2)
    _square(gt, 8, 20, 20)
    m = metrics.match_instances(gt, gt)
    assert (m.tp, m.fp, m.fn, m.f1, m.panoptic_quality, m.mean_matched_iou) == (
        2,
        0,
        0,
        1.0,
        1.0,
        1.0,
    )
    np.testing.assert_array_equal(np.sort(m.matched_true), [3, 8])


def test_shifted_object_matches_below_its_iou_only():
    gt, pred = np.zeros((2, 30, 30), np.int32)
    _square(gt, 1, 5, 5)
    _square(pred, 1, 5, 7)  # shifted by 2: IoU = 80 / 120
    iou = 80 / 120
    m = metrics.match_instances(gt, pred, 0.5)
    assert (m.tp, m.fp, m.fn) == (1, 0, 0)
    assert m.mean_matched_iou == pytest.approx(iou) and m.panoptic_quality == pytest.approx(iou)
    m = metrics.match_instances(gt, pred, 0.7)
    assert (m.tp, m.fp, m.fn, m.precision, m.recall, m.panoptic_quality) == (0, 1, 1, 0.0, 0.0, 0.0)
    ap = metrics.average_precision(gt, pred)
    assert ap.scores == (1.0,) * 4 + (0.0,) * 6  # matched at 0.50 .. 0.65
    assert float(ap) == pytest.approx(0.4)


def test_split_and_merged_objects():
    whole, halves = np.zeros((2, 20, 20), np.int64)
    _square(whole, 1, 0, 0)
    halves[0:10, 0:5], halves[0:10, 5:10] = 1, 2  # each half has IoU 0.5 (not > 0.5)
    split = metrics.match_instances(whole, halves)
    assert (split.tp, split.fp, split.fn, split.average_precision) == (0, 2, 1, 0.0)
    merged = metrics.match_instances(halves, whole)
    assert (merged.tp, merged.fp, merged.fn) == (0, 1, 2)
    assert metrics.match_instances(whole, halves, 0.4).tp == 1  # one half can match


def test_missing_and_extra_objects():
    gt = np.zeros((40, 40), np.uint8)
    for k, (y, x) in enumerate([(0, 0), (0, 20), (20, 0)], start=1):
        _square(gt, k, y, x)
    pred = gt.copy()
    pred[pred == 3] = 0  # missed
    _square(pred, 9, 25, 25, size=5)  # extra
    m = metrics.match_instances(gt, pred)
    assert (m.n_true, m.n_pred, m.tp, m.fp, m.fn) == (3, 3, 2, 1, 1)
    assert m.precision == pytest.approx(2 / 3) and m.recall == pytest.approx(2 / 3)
    assert m.f1 == pytest.approx(2 / 3)
    assert m.average_precision == pytest.approx(2 / 4)
    assert m.panoptic_quality == pytest.approx(2 / (2 + 0.5 + 0.5))


@pytest.mark.parametrize(
    ("gt_objects", "pred_objects", "expected"),
    [(0, 0, 1.0), (2, 0, 0.0), (0, 2, 0.0)],
)
def test_instance_edge_cases(gt_objects, pred_objects, expected):
    gt, pred = np.zeros((2, 30, 30), np.int32)
    for k in range(gt_objects):
        _square(gt, k + 1, 15 * k, 0)
    for k in range(pred_objects):
        _square(pred, k + 1, 15 * k, 15)
    m = metrics.match_instances(gt, pred)
    for key in (
        "precision",
        "recall",
        "f1",
        "average_precision",
        "panoptic_quality",
        "mean_matched_iou",
    ):
        assert getattr(m, key) == expected, key
    assert float(metrics.average_precision(gt, pred)) == expected


def test_optimal_matching_beats_greedy():
    # gt A=[0,10) B=[10,14); pred X=[4,14) (IoU .43 with A, .40 with B), Y=[0,4) (IoU .40 with A)
    gt = np.array([[1] * 10 + [2] * 4])
    pred = np.array([[7] * 4 + [5] * 10])
    m = metrics.match_instances(gt, pred, 0.3)  # greedy (X-A first) would find 1 match
    assert m.tp == 2
    assert dict(zip(m.matched_true.tolist(), m.matched_pred.tolist())) == {1: 7, 2: 5}


def _naive_max_matches(gt, pred, t):
    """Independent oracle: dense IoU by looping over pairs, maximum matching by brute force."""
    g_ids, p_ids = np.unique(gt[gt > 0]), np.unique(pred[pred > 0])
    iou = np.array([[np.sum((gt == a) & (pred == b)) / np.sum((gt == a) | (pred == b))
                     for b in p_ids] for a in g_ids]).reshape(len(g_ids), len(p_ids))  # fmt: skip
    best = 0
    small, large = (iou, len(p_ids)) if len(g_ids) <= len(p_ids) else (iou.T, len(g_ids))
    for perm in itertools.permutations(range(large), small.shape[0]):
        best = max(best, sum(small[i, j] > t for i, j in enumerate(perm)))
    return best


@pytest.mark.parametrize("seed", range(6))
def test_matching_agrees_with_brute_force(seed):
    rng = np.random.default_rng(seed)

    def random_labels(n):
        img = np.zeros((24, 24), np.int64)
        for k in rng.permutation(np.arange(1, n + 1)):
            y, x, h, w = rng.integers(0, 18, 2).tolist() + rng.integers(3, 9, 2).tolist()
            img[y : y + h, x : x + w] = k * 1000
        return img

    gt, pred = random_labels(5), random_labels(5)
    for t in (0.1, 0.3, 0.5):
        assert metrics.match_instances(gt, pred, t).tp == _naive_max_matches(gt, pred, t)


def test_huge_ids_give_the_same_result_as_small_ids():
    rng = np.random.default_rng(3)
    gt = np.zeros((64, 64), np.int64)
    for k in range(1, 30):
        y, x = rng.integers(0, 56, 2)
        gt[y : y + 8, x : x + 8] = k
    pred = np.roll(gt, 2, axis=0)
    lut = rng.choice(2**31, size=30, replace=False).astype(np.int64)
    lut[0] = 0
    small = metrics.match_instances(gt, pred)
    big = metrics.match_instances(
        lut[gt].astype(np.uint32), np.where(pred > 0, lut[pred] + 2**31, 0)
    )
    assert (big.tp, big.fp, big.fn) == (small.tp, small.fp, small.fn)
    assert big.panoptic_quality == pytest.approx(small.panoptic_quality)


def test_region_drops_objects_mostly_outside():
    gt = np.zeros((20, 40), np.int32)
    _square(gt, 1, 0, 0)
    _square(gt, 2, 0, 20)
    pred = gt.copy()
    pred[pred == 2] = 0  # object 2 is missed ...
    region = np.zeros_like(gt, bool)
    region[:, :18] = True  # ... but it lies outside the region
    assert metrics.match_instances(gt, pred).fn == 1
    m = metrics.match_instances(gt, pred, region=region)
    assert (m.n_true, m.tp, m.fn) == (1, 1, 0)


def test_3d_objects_and_per_slice():
    gt = np.zeros((3, 20, 20), np.uint16)
    gt[:, 2:8, 2:8] = 1
    pred = gt.copy()
    pred[2] = 0  # last plane missing: 3D IoU = 2/3
    m = metrics.match_instances(gt, pred)
    assert m.tp == 1 and m.mean_matched_iou == pytest.approx(2 / 3)
    per = metrics.per_slice(metrics.match_instances, gt, pred, axis=0)
    assert [r.tp for r in per] == [1, 1, 0]
    assert metrics.per_slice(metrics.dice, gt, pred, axis=0) == [1.0, 1.0, 0.0]
    assert len(metrics.per_slice(metrics.dice, gt, pred, axis=-1)) == 20
    with pytest.raises(UserInputError, match="axis 3"):
        metrics.per_slice(metrics.dice, gt, pred, axis=3)
