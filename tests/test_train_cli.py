"""``napari-unet train`` on small crops of the shared nuclei data: model file, card, resume, errors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import tifffile
import torch

from napari_unet import load_model
from napari_unet.cli import EXIT_USAGE, main
from napari_unet.model.files import read_card, save_model
from napari_unet.model.unet import UNet

CROP = 64
TINY = [
    "--epochs", "1", "--steps-per-epoch", "2", "--patch", "32", "--batch", "2",
    "--depth", "2", "--base-filters", "4", "--device", "cpu", "--seed", "3", "--quiet",
]  # fmt: skip


def _crop_with_most_nuclei(labels: np.ndarray) -> tuple[slice, slice]:
    best, where = -1, (0, 0)
    for y in range(0, labels.shape[0] - CROP + 1, CROP // 2):
        for x in range(0, labels.shape[1] - CROP + 1, CROP // 2):
            count = np.count_nonzero(labels[y : y + CROP, x : x + CROP])
            if count > best:
                best, where = count, (y, x)
    return tuple(slice(w, w + CROP) for w in where)


@pytest.fixture(scope="module")
def folders(data_dir, tmp_path_factory):
    """4 training pairs (one labels file with a ``_labels`` suffix, one image without labels)
    and 2 validation pairs: 64x64 crops of ``dsb2018_fluo``."""
    root = tmp_path_factory.mktemp("cli_data")
    source = data_dir / "dsb2018_fluo"
    names = sorted(p.name for p in (source / "labels").glob("*.tif"))[:7]
    for sub in ("images", "labels", "val_images", "val_labels"):
        (root / sub).mkdir()
    for i, name in enumerate(names):
        labels = tifffile.imread(source / "labels" / name)
        image = tifffile.imread(source / "images" / name)
        sl = _crop_with_most_nuclei(labels)
        prefix = "val_" if i >= 5 else ""
        stem = f"crop{i}"
        tifffile.imwrite(root / f"{prefix}images" / f"{stem}.tif", image[sl])
        if i == 4:
            continue  # an image without labels: skipped with a warning
        label_name = f"{stem}_labels.tif" if i == 1 else f"{stem}.tif"
        tifffile.imwrite(root / f"{prefix}labels" / label_name, labels[sl])
    return root


def _train(folders, out, *extra):
    argv = ["train", "--images", str(folders / "images"), "--labels", str(folders / "labels")]
    return main([*argv, "-o", str(out), *TINY, *extra])


def test_train_writes_a_model_with_metrics_and_provenance(folders, tmp_path, capsys):
    out = tmp_path / "model.safetensors"
    assert _train(folders, out) == 0
    captured = capsys.readouterr()
    assert f"saved {out}" in captured.out
    assert "epoch 1/1: train loss" in captured.err and "val Dice" in captured.err
    assert "post-processing chosen on 1 validation image(s)" in captured.err
    assert "AP@0.5" in captured.out and "mean AP" in captured.out
    assert out.is_file() and out.with_suffix(".ckpt").is_file()

    card = read_card(out)
    assert card["name"] == "model" and card["task"] == "instance"
    assert card["class_names"] == ["background", "interior", "boundary"]
    metrics = card["metrics"]
    assert 0.0 <= metrics["val_dice"] <= 1.0 and metrics["best_epoch"] == 1
    assert np.isfinite(metrics["final_train_loss"]) and np.isfinite(metrics["final_val_loss"])
    assert 0.0 <= metrics["val_mean_ap"] <= metrics["val_ap50"] <= 1.0
    assert {"seed_threshold", "foreground_threshold", "split", "min_size"} <= set(
        card["postprocessing"]
    )
    provenance = card["provenance"]
    assert provenance["seed"] == 3
    assert len(provenance["data_fingerprint"]) == 16
    assert provenance["library_versions"]["torch"] == torch.__version__
    assert provenance["n_training_images"] == 3  # 4 matched pairs, 1 held out
    assert provenance["training"]["patch_size"] == 32 and provenance["epochs_trained"] == 1

    model = load_model(out)
    assert model.config.depth == 2 and model.config.base_filters == 4
    assert model.card["metrics"] == metrics


def test_same_command_same_model(folders, tmp_path):
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    assert _train(folders, a) == 0 and _train(folders, b) == 0
    assert (
        read_card(a)["provenance"]["data_fingerprint"]
        == read_card(b)["provenance"]["data_fingerprint"]
    )
    for (ka, va), (kb, vb) in zip(
        load_model(a).state_dict().items(), load_model(b).state_dict().items()
    ):
        assert ka == kb and torch.equal(va, vb)


def test_background_workers_give_the_same_model(folders, tmp_path):
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    # both runs in child processes (one torch thread each, so they sum alike): DataLoader
    # workers started inside a pytest process that has loaded OpenVINO / ONNX Runtime and Qt
    # (other tests) make that process crash when pytest-xvfb stops the X server at exit
    argv = ["train", "--images", str(folders / "images"), "--labels", str(folders / "labels")]
    for out, workers in ((a, "0"), (b, "2")):
        args = [*argv, "-o", str(out), *TINY, "--workers", workers, "--epochs", "2"]
        child = subprocess.run(
            [sys.executable, "-m", "napari_unet", *args, "--threads", "1"], capture_output=True
        )
        assert child.returncode == 0, child.stderr.decode()[-2000:]
    for (ka, va), (kb, vb) in zip(
        load_model(a).state_dict().items(), load_model(b).state_dict().items()
    ):
        assert ka == kb and torch.equal(va, vb)
    assert read_card(a)["metrics"] == read_card(b)["metrics"]


def _stop_after(monkeypatch, batches: int) -> None:
    """Make the next training run stop after ``batches`` batches, as Ctrl-C would."""
    from napari_unet.training import loop as training

    real = training.train_iter

    def interrupted(*args, stop, **kwargs):
        done = 0
        gen = real(*args, stop=stop, **kwargs)
        while True:
            try:
                event = next(gen)
            except StopIteration as end:
                return end.value
            yield event
            done += isinstance(event, training.BatchEnd)
            if done == batches:
                stop.set()

    monkeypatch.setattr(training, "train_iter", interrupted)


def test_stop_and_resume_give_the_same_model_as_a_straight_run(
    folders, tmp_path, capsys, monkeypatch
):
    straight = tmp_path / "straight.safetensors"
    assert _train(folders, straight, "--epochs", "2") == 0
    out = tmp_path / "model.safetensors"
    with monkeypatch.context() as patch:
        _stop_after(patch, 3)  # in the middle of epoch 2
        assert _train(folders, out, "--epochs", "2") == 0
    ckpt = out.with_suffix(".ckpt")
    assert f"continue with --resume {ckpt}" in capsys.readouterr().err
    assert read_card(out)["provenance"]["epochs_trained"] == 1  # the best so far is saved

    assert _train(folders, out, "--epochs", "2", "--resume", str(ckpt)) == 0
    card = read_card(out)
    assert card["provenance"]["epochs_trained"] == 2
    assert card["metrics"] == read_card(straight)["metrics"]
    resumed, reference = load_model(out).state_dict(), load_model(straight).state_dict()
    for key in reference:
        assert torch.equal(resumed[key], reference[key]), key


def test_resume_with_more_epochs(folders, tmp_path, capsys):
    out = tmp_path / "model.safetensors"
    assert _train(folders, out) == 0
    ckpt = out.with_suffix(".ckpt")
    assert _train(folders, out, "--epochs", "3", "--resume", str(ckpt)) == 0
    assert read_card(out)["provenance"]["epochs_trained"] == 3
    assert "epoch 3/3" in capsys.readouterr().err


def test_resume_with_other_settings_is_refused(folders, tmp_path, capsys):
    out = tmp_path / "model.safetensors"
    assert _train(folders, out) == 0
    capsys.readouterr()
    ckpt = out.with_suffix(".ckpt")
    assert _train(folders, out, "--resume", str(ckpt), "--batch", "3") == EXIT_USAGE
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("napari-unet train: error:") and "different training settings" in last


def test_separate_validation_folders(folders, tmp_path, capsys):
    out = tmp_path / "model.safetensors"
    argv = [
        "--val-images",
        str(folders / "val_images"),
        "--val-labels",
        str(folders / "val_labels"),
    ]
    assert _train(folders, out, *argv, "--task", "semantic") == 0
    card = read_card(out)
    assert card["provenance"]["n_training_images"] == 4  # nothing held out
    assert card["task"] == "semantic" and 0.0 <= card["metrics"]["val_dice"] <= 1.0


def _one_line_error(capsys, *needles: str) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("napari-unet train: error:")
    for needle in needles:
        assert needle in lines[0]
    return lines[0]


def test_missing_folder(folders, tmp_path, capsys):
    argv = ["train", "--images", str(tmp_path / "nope"), "--labels", str(folders / "labels")]
    assert main([*argv, "-o", str(tmp_path / "m.safetensors")]) == EXIT_USAGE
    _one_line_error(capsys, "--images folder not found", "nope")


@pytest.mark.parametrize("workers", ["-1", "many"])
def test_bad_workers(folders, tmp_path, capsys, workers):
    out = tmp_path / "m.safetensors"
    assert _train(folders, out, "--workers", workers) == EXIT_USAGE
    _one_line_error(capsys, "workers must be 'auto' or a whole number", workers)
    assert not out.exists()


def test_no_matching_files(folders, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    tifffile.imwrite(empty / "other.tif", np.zeros((8, 8), np.uint16))
    argv = ["train", "--images", str(folders / "images"), "--labels", str(empty)]
    assert main([*argv, "-o", str(tmp_path / "m.safetensors")]) == EXIT_USAGE
    _one_line_error(capsys, "has a labels file of the same name")


def test_val_images_without_val_labels(folders, tmp_path, capsys):
    out = tmp_path / "m.safetensors"
    assert _train(folders, out, "--val-images", str(folders / "val_images")) == EXIT_USAGE
    _one_line_error(capsys, "--val-images and --val-labels go together")
    assert not out.exists()


def test_output_must_be_a_model_file(folders, tmp_path, capsys):
    assert _train(folders, tmp_path / "model.pt") == EXIT_USAGE
    _one_line_error(capsys, ".safetensors")


def test_patch_larger_than_the_images(folders, tmp_path, capsys):
    out = tmp_path / "m.safetensors"
    assert _train(folders, out, "--patch", "128") == EXIT_USAGE
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("napari-unet train: error:") and "smaller than the patch" in last
    assert not out.exists()


def test_missing_required_argument_is_a_usage_error(capsys):
    assert main(["train", "--labels", "x", "-o", "m.safetensors"]) == EXIT_USAGE
    assert "--images" in capsys.readouterr().err


def test_init_fine_tunes_a_model_and_keeps_its_architecture(folders, tmp_path, capsys):
    first = tmp_path / "first.safetensors"
    assert _train(folders, first) == 0
    tuned = tmp_path / "tuned.safetensors"
    # --depth 1 asks for another architecture: the model's own (depth 2 in TINY) wins
    assert _train(folders, tuned, "--init", str(first), "--depth", "1") == 0
    assert f"starting from {first}" in capsys.readouterr().err
    start, model = load_model(first), load_model(tuned)
    assert model.config == start.config
    card = read_card(tuned)
    assert card["provenance"]["initialized_from"] == {
        "name": "first",
        "data_fingerprint": read_card(first)["provenance"]["data_fingerprint"],
    }
    assert card["provenance"]["training"]["depth"] == start.config.depth
    assert card["provenance"]["training"]["learning_rate"] == 1e-4  # the fine-tuning default
    changed = [
        name
        for name, w in model.state_dict().items()
        if w.is_floating_point() and not torch.equal(w, start.state_dict()[name])
    ]
    assert changed  # it trained, starting from the weights of `first`


def test_init_from_a_model_of_another_task_is_refused(folders, tmp_path, capsys):
    semantic = tmp_path / "semantic.safetensors"
    save_model(UNet(1, 2, depth=2, base_filters=4), semantic, task="semantic")
    code = _train(folders, tmp_path / "x.safetensors", "--init", str(semantic))
    assert code == 2
    err = capsys.readouterr().err
    assert "'semantic' task" in err and "--task semantic" in err
    assert not (tmp_path / "x.safetensors").exists()


def test_border_weight_options_change_the_loss_weights(folders, tmp_path, capsys):
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    assert _train(folders, a) == 0
    assert _train(folders, b, "--no-contact-weight", "--w0", "20") == 0
    assert read_card(a)["provenance"]["training"]["contact_weight"] is True
    assert read_card(b)["provenance"]["training"]["contact_weight"] is False
    assert read_card(b)["provenance"]["training"]["w0"] == 20.0
    capsys.readouterr()
    assert _train(folders, tmp_path / "c.safetensors", "--w0", "-1") == 2
    assert "--w0: must be a finite number >= 0" in capsys.readouterr().err
    wa, wb = load_model(a).state_dict(), load_model(b).state_dict()
    assert any(not torch.equal(wa[k], wb[k]) for k in wa if wa[k].is_floating_point())


def test_object_diameter_sets_the_working_size(folders, tmp_path, capsys):
    out = tmp_path / "model.safetensors"
    assert _train(folders, out, "--object-diameter", "30") == 0
    assert "objects worked at 30 px across" in capsys.readouterr().out
    card = read_card(out)
    assert card["object_diameter"] == 30.0
    assert card["provenance"]["working_size"]["source"] == "given"
    other = tmp_path / "other.safetensors"
    assert _train(folders, other, "--object-diameter", "big") == 2
    assert "--object-diameter must be a number of pixels, auto or none" in capsys.readouterr().err


def test_validation_labels_without_objects_are_said_to_measure_nothing(folders, tmp_path, caplog):
    """Validation labels that are all background give a Dice of nothing: the run says so."""
    empty = tmp_path / "val_labels"
    empty.mkdir()
    for path in (folders / "val_labels").glob("*.tif"):
        tifffile.imwrite(empty / path.name, np.zeros_like(tifffile.imread(path)))
    argv = ["--val-images", str(folders / "val_images"), "--val-labels", str(empty)]
    assert _train(folders, tmp_path / "m.safetensors", *argv) == 0
    assert "the validation labels hold no object" in caplog.text
    caplog.clear()
    assert _train(folders, tmp_path / "m2.safetensors", "--val-images", str(folders / "val_images"),
                  "--val-labels", str(folders / "val_labels")) == 0  # fmt: skip
    assert "hold no object" not in caplog.text
