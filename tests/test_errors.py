"""Every bad input and fault gets a clear answer: exit 2 and one line, never a traceback.

A table of bad inputs over every CLI command (run in-process through ``main``), the same classes
through the public Python functions, the central handler (internal errors, OS errors), and
overwrite refusals compared byte for byte. Interruptions and kills are in
``test_interrupts.py``.
"""

from __future__ import annotations

import errno
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from napari_unet import load_model, save_model, segment, train
from napari_unet.cli import main
from napari_unet.common.errors import UserInputError
from napari_unet.common.validate import check_labels, check_number
from napari_unet.model.unet import UNet

TINY_TRAIN = [
    "--epochs", "1", "--steps-per-epoch", "1", "--patch", "32", "--batch", "1",
    "--depth", "1", "--base-filters", "2", "--device", "cpu", "--quiet", "--val-fraction", "0",
]  # fmt: skip


def _blobs(seed: int = 0, size: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """A small image with a few square objects, and its instance labels."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((size, size), np.uint16)
    for i, (y, x) in enumerate(rng.integers(2, size - 10, (4, 2)), start=1):
        labels[y : y + 7, x : x + 7] = i
    image = (labels > 0) * 200.0 + rng.normal(20, 5, labels.shape)
    return image.astype(np.float32), labels


class _Pickled:
    def __reduce__(self):
        return (os.getcwd, ())


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> dict[str, Path]:
    """A workspace with good and bad files for every command."""
    root = tmp_path_factory.mktemp("errors")
    p: dict[str, Path] = {"root": root}
    torch.manual_seed(0)
    p["model"] = save_model(UNet(1, 3, depth=1, base_filters=2), root / "tiny.safetensors")
    image, labels = _blobs()
    p["image"] = root / "img.tif"
    tifffile.imwrite(p["image"], image)
    p["rgb"] = root / "rgb.tif"
    tifffile.imwrite(p["rgb"], np.stack([image] * 3, -1), photometric="rgb")
    p["two_channel"] = root / "two_channel.tif"  # no axes in its metadata: channels or Z?
    tifffile.imwrite(p["two_channel"], np.stack([image] * 2))
    p["corrupt"] = root / "corrupt.tif"
    p["corrupt"].write_bytes(b"II*\x00garbage" * 3)
    p["text"] = root / "notes.txt"
    p["text"].write_text("hello")
    p["object_npy"] = root / "objects.npy"
    np.save(p["object_npy"], np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    p["empty_npy"] = root / "empty.npy"
    np.save(p["empty_npy"], np.zeros((0, 5), np.float32))
    p["string_npy"] = root / "strings.npy"
    np.save(p["string_npy"], np.array([["a", "b"], ["c", "d"]]))
    p["nan_tif"] = root / "nan.tif"
    tifffile.imwrite(p["nan_tif"], np.full((16, 16), np.nan, np.float32))
    p["empty_dir"] = root / "empty_dir"
    p["empty_dir"].mkdir()
    p["pickle_model"] = root / "model.pt"
    torch.save({"weights": _Pickled()}, p["pickle_model"])
    p["raw_pickle"] = root / "raw.safetensors"
    p["raw_pickle"].write_bytes(pickle.dumps(_Pickled(), protocol=4))
    p["code_ckpt"] = root / "code.ckpt"
    torch.save({"format": _Pickled()}, p["code_ckpt"])
    p["existing"] = root / "existing.file"
    p["existing"].write_bytes(b"keep me")
    p["existing_tif"] = root / "existing.tif"
    p["existing_tif"].write_bytes(b"keep me")
    p["existing_zip"] = root / "existing.zip"
    p["existing_zip"].write_bytes(b"keep me")
    # training folders: good, with negative labels, with float labels, with a corrupt image,
    # with a shape mismatch
    for name in ("good", "negative", "floats", "corrupt", "mismatch"):
        (root / name / "images").mkdir(parents=True)
        (root / name / "labels").mkdir(parents=True)
        tifffile.imwrite(root / name / "images" / "a.tif", image)
        lab = labels.astype(np.int32)
        if name == "negative":
            lab[0, 0] = -3
        if name == "floats":
            lab = lab.astype(np.float32) + 0.5
        if name == "mismatch":
            lab = lab[:30]
        tifffile.imwrite(root / name / "labels" / "a.tif", lab)
    (root / "corrupt" / "images" / "b.tif").write_bytes(b"II*\x00broken")
    tifffile.imwrite(root / "corrupt" / "labels" / "b.tif", labels)
    p["empty_file"] = root / "empty.tif"  # 0 bytes
    p["empty_file"].write_bytes(b"")
    p["fifo"] = root / "pipe.tif"  # reading a named pipe would wait for a writer for ever
    os.mkfifo(p["fifo"])
    p["loop"] = root / "loop.tif"  # a symbolic link to itself
    p["loop"].symlink_to(p["loop"])
    p["channels_last"] = root / "channels_last.npy"  # (Y, X, 2): not 40 slices 2 px wide
    np.save(p["channels_last"], np.stack([image, image], -1))
    # a z-stack whose ImageJ metadata gives a z step of 1e6 pixels (issue 29 item 7)
    p["spacing_stack"] = root / "spacing.tif"
    tifffile.imwrite(p["spacing_stack"], np.stack([image] * 4).astype(np.uint16), imagej=True,
                     metadata={"axes": "ZYX", "spacing": 1e6})  # fmt: skip
    # evaluation folders
    for name in ("gt", "pred", "gt_neg", "gt_corrupt", "gt_obj", "gt_float", "pred_small",
                 "gt_intensity"):  # fmt: skip
        (root / name).mkdir()
    rng = np.random.default_rng(3)  # an intensity image (whole numbers) given as ground truth
    tifffile.imwrite(
        root / "gt_intensity" / "a.tif", rng.integers(0, 4000, labels.shape, np.uint16)
    )
    tifffile.imwrite(root / "gt" / "a.tif", labels)
    tifffile.imwrite(root / "pred" / "a_labels.tif", labels)
    tifffile.imwrite(root / "gt_neg" / "a.tif", labels.astype(np.int32) - 1)
    (root / "gt_corrupt" / "a.tif").write_bytes(b"MM\x00*broken")
    np.save(root / "gt_obj" / "a.npy", np.array([None, 1], dtype=object), allow_pickle=True)
    tifffile.imwrite(root / "gt_float" / "a.tif", labels.astype(np.float32) / 3)
    tifffile.imwrite(root / "pred_small" / "a.tif", labels[:20])
    return p


def _message_lines(err: str) -> list[str]:
    """stderr without progress-bar lines (a bar may have been drawn before a late failure)."""
    return [ln for ln in err.strip().splitlines() if "step/s" not in ln and "it/s" not in ln]


def _cmd(ws, spec: list[str]) -> list[str]:
    """``{key}`` in a spec stands for a workspace path; ``{root}/x`` for a path under it."""
    return [a.format(**{k: str(v) for k, v in ws.items()}) for a in spec]


_SEG = ["segment", "{image}", "--model", "{model}", "-o"]
_TRAIN = ["train", "--images", "{root}/good/images", "--labels", "{root}/good/labels", *TINY_TRAIN]
_EVAL = ["evaluate", "--gt", "{root}/gt", "--pred", "{root}/pred"]

#: (id, argv, exit code, words the one-line message must hold)
CASES = [
    # -- segment: inputs
    ("seg-missing-input", ["segment", "{root}/nope.tif", "-o", "{root}/o1"], 2, "not found"),
    ("seg-corrupt-tif", ["segment", "{corrupt}", "-o", "{root}/o1", "--model", "{model}"], 2,
     "not a readable TIFF"),
    ("seg-object-npy", ["segment", "{object_npy}", "-o", "{root}/o1", "--model", "{model}"], 2,
     "Python objects"),
    ("seg-empty-npy", ["segment", "{empty_npy}", "-o", "{root}/o1", "--model", "{model}"], 2,
     "empty"),
    ("seg-string-npy", ["segment", "{string_npy}", "-o", "{root}/o1", "--model", "{model}"], 2,
     "not numbers"),
    ("seg-text-file", ["segment", "{text}", "-o", "{root}/o1", "--model", "{model}"], 2,
     "not an image file"),
    ("seg-empty-folder", ["segment", "{empty_dir}", "-o", "{root}/o1", "--model", "{model}"], 2,
     "holds no image"),
    ("seg-nan-image", ["segment", "{nan_tif}", "-o", "{root}/o1", "--model", "{model}"], 2, "NaN"),
    ("seg-wrong-axes", [*_SEG, "{root}/o1", "--axes", "ZYX"], 2, "axes"),
    ("seg-bad-axes-letters", [*_SEG, "{root}/o1", "--axes", "QX"], 2, "axes"),
    ("seg-channel-missing", ["segment", "{rgb}", "--model", "{model}", "-o", "{root}/o1",
                             "--axes", "YXC", "--channel", "5"], 2, "channel 5 does not exist"),
    ("seg-channel-unknown-name", ["segment", "{rgb}", "--model", "{model}", "-o", "{root}/o1",
                                  "--channel", "GFP"], 2, "no channel named 'GFP'"),
    ("seg-ambiguous-axes", ["segment", "{two_channel}", "--model", "{model}", "-o",
                            "{root}/o1"], 2, "channels or Z slices"),
    ("seg-invert-bad", ["segment", "{image}", "-o", "{root}/o1", "--invert", "maybe"], 2,
     "invalid choice"),
    # -- segment: models
    ("seg-model-is-folder", ["segment", "{image}", "-o", "{root}/o1", "--model", "{empty_dir}"], 2,
     "is a folder"),
    ("seg-model-pickle", ["segment", "{image}", "-o", "{root}/o1", "--model", "{pickle_model}"], 2,
     "can run code"),
    ("seg-model-raw-pickle", ["segment", "{image}", "-o", "{root}/o1", "--model", "{raw_pickle}"],
     2, "can run code"),
    ("seg-model-text", ["segment", "{image}", "-o", "{root}/o1", "--model", "{text}"], 2,
     "not a readable model file"),
    ("seg-model-missing", ["segment", "{image}", "-o", "{root}/o1", "--model", "{root}/no.st"], 2,
     "not found"),
    # -- segment: numbers
    ("seg-tile-0", [*_SEG, "{root}/o1", "--tile", "0"], 2, "--tile"),
    ("seg-tile-float", [*_SEG, "{root}/o1", "--tile", "3.5"], 2, "whole number"),
    ("seg-scale-nan", [*_SEG, "{root}/o1", "--scale", "nan"], 2, "--scale"),
    ("seg-scale-inf", [*_SEG, "{root}/o1", "--scale", "inf"], 2, "finite"),
    ("seg-scale-neg", [*_SEG, "{root}/o1", "--scale", "-1"], 2, "> 0"),
    ("seg-batch-0", [*_SEG, "{root}/o1", "--batch-size", "0"], 2, "--batch-size"),
    ("seg-min-size-neg", [*_SEG, "{root}/o1", "--min-size", "-1"], 2, "--min-size"),
    ("seg-overlap-nan", [*_SEG, "{root}/o1", "--overlap", "nan"], 2, "--overlap"),
    ("seg-diameter-nan", [*_SEG, "{root}/o1", "--diameter", "nan"], 2, "--diameter"),
    ("seg-diameter-word", [*_SEG, "{root}/o1", "--diameter", "big"], 2, "--diameter"),
    # -- segment: outputs
    ("seg-out-is-file", [*_SEG, "{existing}"], 2, "is a file"),
    ("seg-diameter-implies-huge-scale", ["segment", "{image}", "-o", "{root}/o1", "--diameter",
                                         "0.5"], 2, "would resample the image by"),
    ("seg-diameter-tiny", ["segment", "{image}", "-o", "{root}/o1", "--diameter", "1e-9"], 2,
     "would resample the image by"),
    ("seg-anisotropy-huge", [*_SEG, "{root}/o1", "--anisotropy", "1e9"], 2,
     "anisotropy must be a number in"),
    ("export-onto-existing", ["export", "{model}", "-o", "{existing_zip}"], 2,
     "exists; pass --overwrite"),
    ("seg-out-under-file", [*_SEG, "{existing}/sub"], 2, "is a file"),
    ("seg-out-file-name", [*_SEG, "{root}/result.tif"], 2, "looks like a file name"),
    ("seg-out-not-writable", [*_SEG, "/sys/napari-unet-out"], 2, "-o/--outdir"),
    ("seg-out-unwritable-folder", [*_SEG, "/sys"], 2, "cannot write"),
    # -- train: numbers
    ("train-lr-nan", [*_TRAIN, "-o", "{root}/t.safetensors", "--lr", "nan"], 2, "--lr"),
    ("train-lr-0", [*_TRAIN, "-o", "{root}/t.safetensors", "--lr", "0"], 2, "> 0"),
    ("train-lr-word", [*_TRAIN, "-o", "{root}/t.safetensors", "--lr", "fast"], 2, "number"),
    ("train-w0-nan", [*_TRAIN, "-o", "{root}/t.safetensors", "--w0", "nan"], 2, "--w0"),
    ("train-w0-inf", [*_TRAIN, "-o", "{root}/t.safetensors", "--w0", "inf"], 2, "--w0"),
    ("train-threads-neg", [*_TRAIN, "-o", "{root}/t.safetensors", "--threads", "-1"], 2,
     "--threads"),
    ("train-threads-0", [*_TRAIN, "-o", "{root}/t.safetensors", "--threads", "0"], 2,
     "--threads"),
    ("train-epochs-0", [*_TRAIN, "-o", "{root}/t.safetensors", "--epochs", "0"], 2, "--epochs"),
    ("train-patch-0", [*_TRAIN, "-o", "{root}/t.safetensors", "--patch", "0"], 2, "--patch"),
    ("train-seed-neg", [*_TRAIN, "-o", "{root}/t.safetensors", "--seed", "-1"], 2, "--seed"),
    ("train-val-fraction", [*_TRAIN, "-o", "{root}/t.safetensors", "--val-fraction", "1.5"], 2,
     "--val-fraction"),
    ("train-zoom-nan", [*_TRAIN, "-o", "{root}/t.safetensors", "--zoom", "nan", "1"], 2, "--zoom"),
    ("train-zoom-reversed", [*_TRAIN, "-o", "{root}/t.safetensors", "--zoom", "2", "1"], 2,
     "zoom"),
    ("train-depth-9", [*_TRAIN, "-o", "{root}/t.safetensors", "--depth", "9"], 2, "--depth"),
    # -- train: data
    ("train-negative-labels", ["train", "--images", "{root}/negative/images", "--labels",
                               "{root}/negative/labels", *TINY_TRAIN, "-o", "{root}/t.safetensors"],
     2, "negative label ids"),
    ("train-float-labels", ["train", "--images", "{root}/floats/images", "--labels",
                            "{root}/floats/labels", *TINY_TRAIN, "-o", "{root}/t.safetensors"],
     2, "whole-number label ids"),
    ("train-corrupt-image", ["train", "--images", "{root}/corrupt/images", "--labels",
                             "{root}/corrupt/labels", *TINY_TRAIN, "-o", "{root}/t.safetensors"],
     2, "not a readable TIFF"),
    ("train-shape-mismatch", ["train", "--images", "{root}/mismatch/images", "--labels",
                              "{root}/mismatch/labels", *TINY_TRAIN, "-o", "{root}/t.safetensors"],
     2, "does not match"),
    ("train-images-is-file", ["train", "--images", "{image}", "--labels", "{root}/good/labels",
                              *TINY_TRAIN, "-o", "{root}/t.safetensors"], 2, "not a folder"),
    # -- train: outputs, checkpoints, models
    ("train-out-exists", [*_TRAIN, "-o", "{model}"], 2, "--overwrite"),
    ("train-out-is-folder", [*_TRAIN, "-o", "{empty_dir}"], 2, "is a folder"),
    ("train-out-suffix", [*_TRAIN, "-o", "{root}/m.pt"], 2, ".safetensors"),
    ("train-out-under-file", [*_TRAIN, "-o", "{existing}/m.safetensors"], 2, "is a file"),
    ("train-out-not-writable", [*_TRAIN, "-o", "/sys/m.safetensors"], 2, "cannot write"),
    ("train-resume-missing", [*_TRAIN, "-o", "{root}/t.safetensors", "--resume", "{root}/no.ckpt"],
     2, "not found"),
    ("train-resume-folder", [*_TRAIN, "-o", "{root}/t.safetensors", "--resume", "{empty_dir}"], 2,
     "folder"),
    ("train-resume-code", [*_TRAIN, "-o", "{root}/t.safetensors", "--resume", "{code_ckpt}"], 2,
     "could run code"),
    ("train-resume-text", [*_TRAIN, "-o", "{root}/t.safetensors", "--resume", "{text}"], 2,
     "not a readable training checkpoint"),
    ("export-not-zip", ["export", "{model}", "-o", "{root}/package.tif"], 2,
     "-o/--output must end in .zip"),
    ("export-onto-folder", ["export", "{model}", "-o", "{empty_dir}", "--overwrite"], 2,
     "is a folder; give a file name"),
    ("export-unwritable", ["export", "{model}", "-o", "/proc/package.zip"], 2, "-o/--output"),
    ("train-diverges", [*_TRAIN, "-o", "{root}/t.safetensors", "--lr", "1e9", "--epochs", "2",
                        "--steps-per-epoch", "3"], 2, "training diverged"),
    ("train-diameter-beyond-patch", [*_TRAIN, "-o", "{root}/t.safetensors", "--object-diameter",
                                     "1e6"], 2, "larger than the training patch"),
    ("train-nproc-too-many", [*_TRAIN, "-o", "{root}/t.safetensors", "--nproc", "1000"], 2,
     "--nproc 1000 is more than this machine's"),
    ("seg-spacing-metadata", ["segment", "{spacing_stack}", "--model", "{model}", "-o",
                              "{root}/o1"], 2, "--anisotropy"),
    ("seg-threshold-above-1", [*_SEG, "{root}/o1", "--foreground-threshold", "1"], 2,
     "--foreground-threshold"),
    ("seg-empty-file", ["segment", "{empty_file}", "--model", "{model}", "-o", "{root}/o1"], 2,
     "empty (0 bytes)"),
    ("seg-fifo", ["segment", "{fifo}", "--model", "{model}", "-o", "{root}/o1"], 2,
     "named pipe"),
    ("seg-symlink-loop", ["segment", "{loop}", "--model", "{model}", "-o", "{root}/o1"], 2,
     "symbolic link to nothing"),
    ("seg-channels-last", ["segment", "{channels_last}", "--model", "{model}", "-o",
                           "{root}/o1"], 2, "--axes YXC"),
    ("seg-threshold-zero", [*_SEG, "{root}/o1", "--seed-threshold", "0"], 2, "--seed-threshold"),
    ("train-resume-model", [*_TRAIN, "-o", "{root}/t.safetensors", "--resume", "{model}"], 2,
     "--init"),
    ("seg-model-is-checkpoint", ["segment", "{image}", "-o", "{root}/o1", "--model",
                                 "{code_ckpt}"], 2, "training checkpoint, not a model file"),
    ("train-init-pickle", [*_TRAIN, "-o", "{root}/t.safetensors", "--init", "{pickle_model}"], 2,
     "can run code"),
    ("train-init-folder", [*_TRAIN, "-o", "{root}/t.safetensors", "--init", "{empty_dir}"], 2,
     "is a folder"),
    ("train-ckpt-is-output", [*_TRAIN, "-o", "{root}/t.safetensors", "--checkpoint",
                              "{root}/t.safetensors"], 2, "--checkpoint"),
    # -- evaluate
    ("eval-corrupt-gt", ["evaluate", "--gt", "{root}/gt_corrupt", "--pred", "{root}/pred"], 2,
     "not a readable TIFF"),
    ("eval-object-npy", ["evaluate", "--gt", "{root}/gt_obj", "--pred", "{root}/pred"], 2,
     "Python objects"),
    ("eval-negative-gt", ["evaluate", "--gt", "{root}/gt_neg", "--pred", "{root}/pred"], 2,
     "negative label ids"),
    ("eval-float-gt", ["evaluate", "--gt", "{root}/gt_float", "--pred", "{root}/pred"], 2,
     "whole-number label ids"),
    ("eval-intensity-gt", ["evaluate", "--gt", "{root}/gt_intensity", "--pred", "{root}/pred"],
     2, "does not look like a label image"),
    ("eval-shape-mismatch", ["evaluate", "--gt", "{root}/gt", "--pred", "{root}/pred_small"], 2,
     "same shape"),
    ("eval-missing-gt", ["evaluate", "--gt", "{root}/nope", "--pred", "{root}/pred"], 2,
     "does not exist"),
    ("eval-csv-exists", [*_EVAL, "--csv", "{existing}"], 2, "--overwrite"),
    ("eval-csv-is-folder", [*_EVAL, "--csv", "{empty_dir}"], 2, "is a folder"),
    ("eval-csv-under-file", [*_EVAL, "--csv", "{existing}/t.csv"], 2, "is a file"),
    ("eval-csv-not-writable", [*_EVAL, "--csv", "/sys/t.csv"], 2, "cannot write"),
    ("eval-iou-nan", [*_EVAL, "--iou-threshold", "nan"], 2, "--iou-threshold"),
    ("eval-iou-above-1", [*_EVAL, "--iou-thresholds", "0.5", "1.5"], 2, "--iou-thresholds"),
    ("eval-iou-1", [*_EVAL, "--iou-thresholds", "0", "1"], 2, "--iou-thresholds"),
    ("eval-iou-twice", [*_EVAL, "--iou-thresholds", "0.5", "0.5", "0.9"], 2,
     "0.5 given more than once"),
    # -- info
    ("info-folder", ["info", "{empty_dir}"], 2, "is a folder, not a model file"),
    ("info-missing", ["info", "{root}/nope.safetensors"], 2, "not found"),
    ("info-text", ["info", "{text}"], 2, "not a readable model file"),
    ("info-pickle", ["info", "{pickle_model}"], 2, "can run code"),
    ("info-shape-0", ["info", "{model}", "--shape", "0", "0"], 2, "--shape"),
    # -- demo (refused before any work)
    ("demo-out-exists", ["demo", "-o", "{existing_tif}"], 2, "--overwrite"),
    ("demo-out-folder", ["demo", "-o", "{empty_dir}"], 2, "is a folder"),
    ("demo-out-suffix", ["demo", "-o", "{root}/labels.png"], 2, ".tif"),
    # -- usage
    ("usage-no-command", [], 2, "required"),
    ("usage-unknown-option", ["segment", "{image}", "-o", "{root}/o1", "--frobnicate"], 2,
     "unrecognized"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "code", "needle"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input_exits_with_one_line(ws, capsys, argv, code, needle):
    assert main(_cmd(ws, argv)) == code
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert "Traceback" not in err
    assert len(lines) == 1, err
    assert ": error: " in lines[0] and lines[0].startswith("napari-unet")
    assert needle in lines[0], lines[0]
    assert "weights_only" not in err  # torch's unsafe advice never reaches the user


def test_no_output_is_left_by_the_refused_commands(ws):
    for name in ("o1", "t.safetensors", "t.ckpt", "m.safetensors"):
        assert not (ws["root"] / name).exists()
    assert ws["existing"].read_bytes() == b"keep me"
    assert ws["existing_tif"].read_bytes() == b"keep me"
    assert ws["existing_zip"].read_bytes() == b"keep me"
    assert not list(ws["root"].glob(".*.tmp"))


@pytest.mark.parametrize(
    "argv",
    [
        ["segment", "{image}", "--model", "{text}", "-o", "{root}/new/deeper/out"],
        [*_TRAIN, "-o", "{root}/new/deeper/m.safetensors", "--init", "{pickle_model}"],
    ],
    ids=["segment-bad-model", "train-bad-init"],
)
def test_a_refused_command_leaves_no_folder_it_created(ws, capsys, argv):
    assert main(_cmd(ws, argv)) == 2
    assert "error" in capsys.readouterr().err
    assert not (ws["root"] / "new").exists()  # every folder it made, not only the last


def test_a_failed_batch_keeps_its_folder_with_the_written_results(ws, tmp_path, capsys):
    out = tmp_path / "made" / "out"
    code = main(["segment", str(ws["image"]), str(ws["corrupt"]), "--model", str(ws["model"]),
                 "-o", str(out)])  # fmt: skip
    assert code == 2 and "1 written, 1 failed" in capsys.readouterr().err
    assert (out / "img_labels.tif").exists()


# -- the public Python functions: the same classes, the same messages -------------------------


@pytest.mark.parametrize(
    ("call", "error", "needle"),
    [
        (lambda m: segment(np.zeros((0, 0)), m), UserInputError, "empty"),
        (lambda m: segment(np.zeros((8, 0)), m), UserInputError, "empty"),
        (lambda m: segment(np.zeros((16, 16)), m, scale=float("nan")), UserInputError, "scale"),
        (lambda m: segment(np.zeros((16, 16)), m, tile_shape=-4), UserInputError, "tile_shape"),
        (lambda m: segment(np.zeros((16, 16)), m, batch_size=0), UserInputError, "batch_size"),
        (lambda m: segment(np.zeros((16, 16)), m, min_size=-1), UserInputError, "min_size"),
        (lambda m: segment(np.zeros((16, 16)), m, overlap=float("inf")), UserInputError, "overlap"),
        (lambda m: segment(np.zeros((16, 16)), m, diameter=-3), UserInputError, "diameter"),
        (lambda m: segment(np.array([["a"]]), m), UserInputError, "numbers"),
        (lambda m: segment(np.zeros((16, 16, 3)), m, axes="YXC", channel=3), UserInputError,
         "channel 3 does not exist"),
        (lambda m: train([_blobs()[0]], [_blobs()[1]], learning_rate=float("nan")),
         UserInputError, "learning_rate"),
        (lambda m: train([_blobs()[0]], [_blobs()[1]], w0=float("nan")), UserInputError, "w0"),
        (lambda m: train([_blobs()[0]], [_blobs()[1].astype(np.int32) - 1], epochs=1),
         UserInputError, "negative label ids"),
        (lambda m: train([_blobs()[0]], [_blobs()[1] + 0.5], epochs=1), UserInputError,
         "whole-number label ids"),
        (lambda m: train([np.zeros((0, 40))], [np.zeros((0, 40), int)]), UserInputError, "empty"),
        (lambda m: train([np.full((40, 40), np.nan)], [_blobs()[1]]), UserInputError, "NaN"),
        (lambda m: train([_blobs()[0]], [_blobs()[1]], patch_size=float("nan")), UserInputError,
         "patch_size"),
    ],
)  # fmt: skip
def test_python_api_refuses_bad_values(tiny_model, call, error, needle):
    with pytest.raises(error, match=needle):
        call(tiny_model)


def test_load_model_refuses_folders_and_pickles(ws):
    with pytest.raises(UserInputError, match="is a folder, not a model file"):
        load_model(ws["empty_dir"])
    for path in (ws["pickle_model"], ws["raw_pickle"]):
        with pytest.raises(UserInputError, match="can run code") as info:
            load_model(path)
        assert "\n" not in str(info.value)


def test_labels_get_the_same_message_in_training_and_evaluation():
    from napari_unet.evaluation.pairs import evaluate_pair
    from napari_unet.training.data.pairs import prepare_pair

    image = np.zeros((8, 8), np.float32)
    negative = np.full((8, 8), -2, np.int32)
    with pytest.raises(UserInputError) as a:
        prepare_pair(image, negative)
    with pytest.raises(UserInputError) as b:
        evaluate_pair(negative, np.zeros((8, 8), int))
    with pytest.raises(UserInputError) as c:
        check_labels(negative)
    core = "holds negative label ids (min -2); label ids must be >= 0 (0 = background)"
    assert all(core in str(e.value) for e in (a, b, c))


def test_number_validator():
    assert check_number(3, "n", minimum=1, integer=True) == 3
    assert check_number(3.0, "n", integer=True) == 3
    for bad in (float("nan"), float("inf"), -1, "3", True, None):
        with pytest.raises(UserInputError, match=r"^x must be"):
            check_number(bad, "x", minimum=0)
    assert check_number(None, "x", none_ok=True) is None
    with pytest.raises(UserInputError, match="> 0"):
        check_number(0, "x", minimum=0, low_open=True)


def test_huge_label_ids_are_evaluated_or_refused_clearly():
    from napari_unet.evaluation.pairs import evaluate_pair

    big = np.zeros((8, 8), np.int64)
    big[2:5, 2:5] = 2**62
    result = evaluate_pair(big, big)
    assert result.records[0]["n_true"] == 1
    too_big = big.astype(np.uint64)
    too_big[2:5, 2:5] = 2**63 + 5
    with pytest.raises(UserInputError, match="above 2\\*\\*63 - 1"):
        evaluate_pair(too_big, too_big)


# -- the central handler -----------------------------------------------------------------------


def test_internal_error_is_one_line_with_a_log(ws, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))

    def boom(*args, **kwargs):
        raise ZeroDivisionError("bug deep inside")

    monkeypatch.setattr("napari_unet.model.summary.layer_summary", boom)
    assert main(["info", str(ws["model"])]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "internal error (ZeroDivisionError: bug deep inside), please report" in err
    logs = list((tmp_path / "state" / "napari-unet" / "logs").glob("*.log"))
    assert len(logs) == 1 and str(logs[0]) in err
    assert "Traceback" in logs[0].read_text() and "boom" in logs[0].read_text()
    assert main(["--debug", "info", str(ws["model"])]) == 1
    assert "Traceback" in capsys.readouterr().err
    assert main(["info", str(ws["model"]), "--debug"]) == 1
    assert "Traceback" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("code", "needle"),
    [(errno.ENOSPC, "disk is full"), (errno.EACCES, "permissions"), (errno.EROFS, "read-only")],
)
def test_os_errors_while_writing_are_one_line_and_leave_nothing(
    ws, tmp_path, monkeypatch, capsys, code, needle
):
    def fail(path, *args, **kwargs):
        Path(path).write_bytes(b"partial")  # half-written, then the disk fails
        raise OSError(code, os.strerror(code), str(path))

    monkeypatch.setattr(tifffile, "imwrite", fail)
    out = tmp_path / "out"
    assert main(["segment", str(ws["image"]), "--model", str(ws["model"]), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert len(_message_lines(err)) == 1 and "Traceback" not in err
    assert needle in err
    assert not out.exists()  # neither the result nor its temporary, nor the folder made for them


def test_a_failed_checkpoint_write_is_one_line(ws, tmp_path, monkeypatch, capsys):
    def fail(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"half")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.setattr(torch, "save", fail)
    model = tmp_path / "m.safetensors"
    tr = ["train", "--images", str(ws["root"] / "good" / "images")]
    tr += ["--labels", str(ws["root"] / "good" / "labels"), *TINY_TRAIN, "-o", str(model)]
    assert main(tr) == 2
    err = capsys.readouterr().err
    lines = _message_lines(err)  # after the progress of the epoch that ran: one error line
    assert "cannot write the checkpoint (disk full or failing?)" in lines[-1]
    assert not any(ln.startswith("napari-unet") for ln in lines[:-1]) and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_a_huge_tile_is_cut_to_the_image_not_to_the_memory(tiny_model):
    from napari_unet.inference.tiling.tile_plan import MAX_TILE, plan_tiles

    plan = plan_tiles(tiny_model, (40, 40), tile_shape=10**9)
    assert max(plan.tile_shape) <= MAX_TILE[2]


def test_out_of_memory_is_a_one_line_hint(ws, tmp_path, monkeypatch, capsys):
    def oom(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr("napari_unet.inference.pipeline.run_with_progress", oom)
    args = ["segment", str(ws["image"]), "--model", str(ws["model"]), "-o", str(tmp_path)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "not enough memory" in err and len(_message_lines(err)) == 1


def test_unwritable_folder_for_a_non_root_user(ws, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        writable = os.access(locked, os.W_OK)  # root writes anyway: then the probe says so too
        code = main(["segment", str(ws["image"]), "--model", str(ws["model"]), "-o", str(locked)])
    finally:
        locked.chmod(0o700)
    assert code == (0 if writable else 2)
    if not writable:
        assert "cannot write" in capsys.readouterr().err


# -- folders, unicode, overwrite ---------------------------------------------------------------


def test_segment_a_folder_of_tiffs_and_unicode_paths(ws, tmp_path):
    folder = tmp_path / "bilder é 日本"
    folder.mkdir()
    for name in ("a.tif", "b.tiff"):
        tifffile.imwrite(folder / name, tifffile.imread(ws["image"]))
    (folder / "readme.txt").write_text("not an image")
    out = tmp_path / "résultats"
    assert main(["segment", str(folder), "--model", str(ws["model"]), "-o", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a_labels.tif", "b_labels.tif"]


def test_two_inputs_with_one_output_name_are_refused(ws, tmp_path, capsys):
    for sub in ("x", "y"):
        (tmp_path / sub).mkdir()
        tifffile.imwrite(tmp_path / sub / "a.tif", tifffile.imread(ws["image"]))
    argv = ["segment", str(tmp_path / "x" / "a.tif"), str(tmp_path / "y" / "a.tif")]
    assert main([*argv, "--model", str(ws["model"]), "-o", str(tmp_path / "o")]) == 2
    assert "would both be written" in capsys.readouterr().err


def _digest(path: Path) -> bytes:
    return path.read_bytes()


def test_overwrite_is_refused_byte_for_byte_then_allowed(ws, tmp_path, capsys):
    out = tmp_path / "out"
    seg = ["segment", str(ws["image"]), "--model", str(ws["model"]), "-o", str(out)]
    assert main(seg) == 0
    target = out / "img_labels.tif"
    target.write_bytes(b"old labels")  # the user's own file under that name
    assert main(seg) == 2
    assert _digest(target) == b"old labels"
    assert main([*seg, "--overwrite"]) == 0
    assert tifffile.imread(target).shape == (40, 40)

    csv = tmp_path / "scores.csv"
    csv.write_bytes(b"old scores")
    ev = ["evaluate", "--gt", str(ws["root"] / "gt"), "--pred", str(ws["root"] / "pred")]
    assert main([*ev, "--csv", str(csv)]) == 2
    assert _digest(csv) == b"old scores"
    assert main([*ev, "--csv", str(csv), "--overwrite"]) == 0
    assert _digest(csv).startswith(b"image,")

    model = tmp_path / "m.safetensors"
    model.write_bytes(b"old model")
    tr = ["train", "--images", str(ws["root"] / "good" / "images")]
    tr += ["--labels", str(ws["root"] / "good" / "labels"), *TINY_TRAIN, "-o", str(model)]
    assert main(tr) == 2
    assert _digest(model) == b"old model"
    capsys.readouterr()
    assert main([*tr, "--overwrite"]) == 0
    assert load_model(model).card["name"] == "m"
    assert not list(tmp_path.glob(".*.tmp"))


def test_fresh_train_refuses_the_checkpoint_of_an_earlier_run(ws, tmp_path, capsys):
    model, ckpt = tmp_path / "m.safetensors", tmp_path / "m.ckpt"
    ckpt.write_bytes(b"an interrupted run")
    tr = ["train", "--images", str(ws["root"] / "good" / "images")]
    tr += ["--labels", str(ws["root"] / "good" / "labels"), *TINY_TRAIN, "-o", str(model)]
    assert main(tr) == 2
    err = capsys.readouterr().err
    assert f"--resume {ckpt}" in err and "--overwrite" in err
    assert _digest(ckpt) == b"an interrupted run" and not model.exists()
    assert main([*tr, "--overwrite"]) == 0
    assert ckpt.stat().st_size > 100
    # a finished run continues with --resume, which may replace its own model file
    assert main([*tr, "--resume", str(ckpt), "--epochs", "2"]) == 0


def test_resume_with_other_settings_is_one_short_line(ws, tmp_path, capsys):
    model = tmp_path / "m.safetensors"
    tr = ["train", "--images", str(ws["root"] / "good" / "images")]
    tr += ["--labels", str(ws["root"] / "good" / "labels"), *TINY_TRAIN, "-o", str(model)]
    assert main(tr) == 0
    capsys.readouterr()
    assert main([*tr, "--resume", str(model.with_suffix(".ckpt")), "--lr", "0.5"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and len(err) < 400
    assert "learning_rate 0.001, now 0.5" in err


# -- BioImage.IO packages made to mislead: refused in one line, before anything is read ------


def _rezip(source: Path, target: Path, files: dict[str, bytes | None]) -> Path:
    """``source`` with members replaced (bytes), removed (None) or added."""
    import zipfile

    with zipfile.ZipFile(source) as z:
        members = {name: z.read(name) for name in z.namelist()}
    members.update(files)
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            if data is not None:
                z.writestr(name, data)
    return target


def _mark_encrypted(path: Path, member: str) -> None:
    """Set the "encrypted" flag of ``member`` in both of the zip's headers (as ``zip -e`` does)."""
    import struct
    import zipfile

    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        data[z.getinfo(member).header_offset + 6] |= 0x1  # local header: flags at +6
    start = 0
    while (start := data.find(b"PK\x01\x02", start + 1)) != -1:  # central directory entries
        (length,) = struct.unpack_from("<H", data, start + 28)
        if data[start + 46 : start + 46 + length] == member.encode():
            data[start + 8] |= 0x1
    path.write_bytes(bytes(data))


def _zip_bomb(source: Path, target: Path, rdf: str, sha: str) -> Path:
    """The package with weights.pt swapped for 1 GiB of zeros (~5 MB compressed) and its
    SHA-256 put in rdf.yaml: a self-consistent package that only its size gives away."""
    import hashlib
    import zipfile

    chunk, n = bytes(2**24), 64
    digest = hashlib.sha256()
    for _ in range(n):
        digest.update(chunk)
    _rezip(source, target, {"weights.pt": None, "rdf.yaml": rdf.replace(sha, digest.hexdigest()).encode()})  # fmt: skip
    info = zipfile.ZipInfo("weights.pt")
    info.compress_type, info._compresslevel = zipfile.ZIP_DEFLATED, 1
    with zipfile.ZipFile(target, "a") as z, z.open(info, "w", force_zip64=True) as member:
        for _ in range(n):
            member.write(chunk)
    return target


@pytest.fixture(scope="module")
def packages(tmp_path_factory) -> dict[str, Path]:
    """A package that `napari-unet export` made, and hostile packages built from it."""
    import hashlib
    import stat
    import zipfile

    from napari_unet.zoo import export_bioimageio
    from napari_unet.zoo.artifacts import write_state_dict

    root = tmp_path_factory.mktemp("packages")
    torch.manual_seed(0)
    good = export_bioimageio(UNet(1, 3, depth=1, base_filters=2), root / "good.zip", onnx=False)
    with zipfile.ZipFile(good) as z:
        rdf, weights = z.read("rdf.yaml").decode(), z.read("weights.pt")
    sha = hashlib.sha256(weights).hexdigest()
    torch.manual_seed(1)  # another model's weights, of the same architecture
    outside = write_state_dict(UNet(1, 3, depth=1, base_filters=2), root / "outside.pt")
    outside_sha = hashlib.sha256(outside.read_bytes()).hexdigest()

    def pointing_at(source: str) -> bytes:
        return rdf.replace("source: weights.pt", f"source: {source}").replace(sha, outside_sha).encode()  # fmt: skip

    p = {"good": good, "image": root / "img.tif", "marker": root / "code-ran"}
    tifffile.imwrite(p["image"], _blobs(size=64)[0])
    p["absolute"] = _rezip(good, root / "absolute.zip", {"rdf.yaml": pointing_at(str(outside))})
    p["dotdot"] = _rezip(good, root / "dotdot.zip", {"rdf.yaml": pointing_at("../outside.pt")})
    p["missing"] = _rezip(good, root / "missing.zip", {"weights.pt": None})
    p["swapped"] = _rezip(good, root / "swapped.zip", {"weights.pt": outside.read_bytes()})
    p["bad_yaml"] = _rezip(good, root / "bad_yaml.zip", {"rdf.yaml": b"name: [tiny\n  x: {"})
    tag = f'!!python/object/apply:os.system ["touch {p["marker"]}"]'
    p["python_tag"] = _rezip(good, root / "tag.zip", {"rdf.yaml": rdf.replace("name: ", f"name: {tag} #", 1).encode()})  # fmt: skip
    p["two_rdfs"] = _rezip(good, root / "two.zip", {"bioimageio.yaml": rdf.encode()})
    card_end = "      padding: same\n  napari_unet_versions"  # the napari-unet card, edited
    bad_card = rdf.replace(card_end, card_end.replace("\n", "\n    object_diameter: -3\n", 1))
    assert bad_card != rdf
    p["bad_card"] = _rezip(good, root / "bad_card.zip", {"rdf.yaml": bad_card.encode()})
    p["encrypted"] = _rezip(good, root / "encrypted.zip", {})
    _mark_encrypted(p["encrypted"], "weights.pt")
    p["symlink"] = _rezip(good, root / "symlink.zip", {"weights.pt": None})
    link = zipfile.ZipInfo("weights.pt")
    link.create_system, link.external_attr = 3, (stat.S_IFLNK | 0o777) << 16
    with zipfile.ZipFile(p["symlink"], "a") as z:
        z.writestr(link, str(outside))  # a link to another model's weights
    p["bomb"] = _zip_bomb(good, root / "bomb.zip", rdf, sha)
    p["folder_link"] = root / "folder"  # an unpacked package whose weights link out of it
    with zipfile.ZipFile(good) as z:
        z.extractall(p["folder_link"])
    (p["folder_link"] / "weights.pt").unlink()
    (p["folder_link"] / "weights.pt").symlink_to(outside)
    return p


#: (package, words of the one-line refusal)
HOSTILE = [
    ("absolute", "points at '/"),
    ("dotdot", "points at '../outside.pt', outside the package"),
    ("missing", "names 'weights.pt', which is not in the package"),
    ("symlink", "member 'weights.pt' is a symbolic link"),
    ("swapped", "does not match the SHA-256"),
    ("bad_yaml", "rdf.yaml is not valid YAML"),
    ("python_tag", "carries a '!!python/...' tag"),
    ("encrypted", "member 'weights.pt' is encrypted"),
    ("bomb", "x compressed; a zip bomb?)"),
    ("two_rdfs", "holds 2 package descriptions"),
    ("bad_card", "invalid model card: object_diameter must be a finite number > 0, got -3"),
    ("folder_link", "outside the package's folder"),
]


@pytest.mark.parametrize(("name", "needle"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_a_hostile_package_is_refused_in_one_line(packages, tmp_path, capsys, name, needle):
    import tracemalloc

    out, package = tmp_path / "out", str(packages[name])
    commands = {
        "segment": ["segment", str(packages["image"]), "--model", package, "-o", str(out)],
        "info": ["info", package],
    }  # train --init goes through the same door: see the next test
    for command, argv in commands.items():
        tracemalloc.start()
        try:
            code = main(argv)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        err = capsys.readouterr().err
        assert code == 2, (command, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"napari-unet {command}: error: "), err
        assert needle in lines[0], lines[0]
        assert "internal error" not in err and "weights_only" not in err and "pickle" not in err
        assert peak < 64 * 2**20, f"{command} read {peak / 2**20:.0f} MiB before refusing"
    assert not out.exists() or list(out.iterdir()) == []  # nothing segmented, nothing written
    assert not packages["marker"].exists()  # the YAML tag built nothing


def test_an_exported_package_is_described_as_one_and_fine_tunes(ws, packages, tmp_path, capsys):
    import zipfile

    from napari_unet.zoo.checked import MAX_RATIO

    good = str(packages["good"])
    assert main(["info", good]) == 0
    out = capsys.readouterr().out
    assert out.startswith("BioImage.IO model package: ") and "pickle" not in out
    assert "pytorch_state_dict (runs here)" in out and "Layer summary" in out
    with pytest.raises(UserInputError, match=r"is a BioImage\.IO model package") as err:
        load_model(good)  # the Python model-file loader names it, and where it is taken
    assert "can run code" not in str(err.value)
    model = tmp_path / "tuned.safetensors"
    train_args = ["train", "--images", str(ws["root"] / "good" / "images"), "--labels",
                  str(ws["root"] / "good" / "labels"), *TINY_TRAIN, "-o", str(model)]  # fmt: skip
    assert main([*train_args, "--init", good]) == 0
    assert load_model(model).config.base_filters == 2  # the package's network, fine-tuned
    for name, needle in (("swapped", "SHA-256"), ("bomb", "zip bomb")):
        assert main([*train_args, "-o", str(tmp_path / f"{name}.safetensors"), "--init",
                     str(packages[name])]) == 2  # fmt: skip
        assert needle in capsys.readouterr().err
    with zipfile.ZipFile(packages["bomb"]) as z:  # refused for its ratio, not its size
        bomb = z.getinfo("weights.pt")
    assert bomb.file_size / bomb.compress_size > MAX_RATIO
