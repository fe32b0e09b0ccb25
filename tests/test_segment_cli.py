"""``napari-unet segment``: TIFF and zarr / OME-Zarr in, labels files out, exit codes."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import zarr

from napari_unet import segment
from napari_unet.cli import main


@pytest.fixture
def image():
    return (np.random.default_rng(0).random((70, 90)) * 255).astype(np.uint8)


def test_tiff_inputs_give_labels_tiffs_equal_to_python(
    tiny_model, tiny_model_file, image, tmp_path, capsys
):
    tifffile.imwrite(tmp_path / "a.tif", image)
    tifffile.imwrite(
        tmp_path / "b.ome.tif", np.stack([image, image[::-1]]), metadata={"axes": "TYX"}
    )
    out = tmp_path / "out"
    code = main(
        ["segment", str(tmp_path / "a.tif"), str(tmp_path / "b.ome.tif"), "-o", str(out),
         "--model", str(tiny_model_file), "--output", "semantic", "--tile", "64", "--overlap", "0.25"]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    a = tifffile.imread(out / "a_labels.tif")
    np.testing.assert_array_equal(
        a, segment(image, tiny_model, output="semantic", tile_shape=64, overlap=16)
    )
    b = tifffile.imread(out / "b_labels.tif")
    assert b.shape == (2, 70, 90)  # the file's T axis was read from its metadata
    np.testing.assert_array_equal(b[0], a)
    assert "predict" in captured.err  # the progress bar


def test_zarr_and_ome_zarr_inputs_give_zarr_outputs(tiny_model, tiny_model_file, image, tmp_path):
    plain = zarr.open_array(
        tmp_path / "plain.zarr", mode="w", shape=image.shape, chunks=(32, 32), dtype="u1"
    )
    plain[:] = image
    group = zarr.open_group(tmp_path / "ome.zarr", mode="w")
    group.create_array("0", shape=(2, *image.shape), chunks=(1, 32, 32), dtype="u1")[:] = np.stack(
        [image] * 2
    )
    group.attrs["multiscales"] = [
        {"axes": [{"name": "z"}, {"name": "y"}, {"name": "x"}], "datasets": [{"path": "0"}]}
    ]
    out = tmp_path / "out"
    args = ["segment", str(tmp_path / "plain.zarr"), str(tmp_path / "ome.zarr"), "-o", str(out)]
    assert main([*args, "--model", str(tiny_model_file), "--output", "probabilities"]) == 0
    expected = segment(image, tiny_model, output="probabilities")
    np.testing.assert_allclose(
        zarr.open_array(out / "plain_probabilities.zarr")[:], expected, atol=1e-5
    )
    ome = zarr.open_array(out / "ome_probabilities.zarr")
    assert ome.shape == (3, 2, *image.shape)
    np.testing.assert_allclose(ome[:, 1], expected, atol=1e-5)


def test_missing_builtin_model_exits_2_and_says_pass_model(image, tmp_path, monkeypatch, capsys):
    from napari_unet.model import files as model_io

    monkeypatch.setattr(model_io.resources, "files", lambda package: tmp_path)
    tifffile.imwrite(tmp_path / "a.tif", image)
    assert main(["segment", str(tmp_path / "a.tif"), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "--model" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("setup", "extra", "match"),
    [
        (lambda p: p.joinpath("x.png").write_bytes(b"png"), [], "not a readable PNG"),
        (lambda p: p.joinpath("x.tif").write_bytes(b"not a tiff"), [], "not a readable TIFF"),
        (lambda p: tifffile.imwrite(p / "x.tif", np.full((9, 9), np.nan, np.float32)), [], "NaN"),
        (lambda p: tifffile.imwrite(p / "x.tif", np.zeros((9, 9))), ["--axes", "ZYX"], "dimension"),
        (
            lambda p: tifffile.imwrite(p / "x.tif", np.zeros((9, 9))),
            ["--overlap", "0.5"],
            "needs --tile",
        ),
    ],
)
def test_bad_inputs_exit_2_with_one_line(tiny_model_file, tmp_path, capsys, setup, extra, match):
    setup(tmp_path)
    name = next(p.name for p in tmp_path.iterdir() if p.name.startswith("x."))
    code = main(
        [
            "segment",
            str(tmp_path / name),
            "-o",
            str(tmp_path / "o"),
            "--model",
            str(tiny_model_file),
            *extra,
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert match in err and "Traceback" not in err


def test_missing_input_and_corrupt_model(tiny_model_file, tmp_path, capsys):
    assert (
        main(
            [
                "segment",
                str(tmp_path / "nope.tif"),
                "-o",
                str(tmp_path),
                "--model",
                str(tiny_model_file),
            ]
        )
        == 2
    )
    assert "input not found" in capsys.readouterr().err
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 16)
    tifffile.imwrite(tmp_path / "a.tif", np.zeros((9, 9), np.uint8))
    assert main(["segment", str(tmp_path / "a.tif"), "-o", str(tmp_path), "--model", str(bad)]) == 2
    assert "not a readable model file" in capsys.readouterr().err


def test_voxel_size_gives_the_anisotropy(tmp_path):
    from napari_unet.cli.voxel_size import anisotropy_of

    stack = np.zeros((4, 16, 16), np.uint8)
    tifffile.imwrite(
        tmp_path / "ij.tif", stack, imagej=True, resolution=(1 / 0.2, 1 / 0.2),
        metadata={"spacing": 0.6, "unit": "um", "axes": "ZYX"},
    )  # fmt: skip
    assert anisotropy_of(tmp_path / "ij.tif") == pytest.approx(3.0)
    tifffile.imwrite(
        tmp_path / "o.ome.tif", stack, photometric="minisblack",
        metadata={"axes": "ZYX", "PhysicalSizeZ": 1.0, "PhysicalSizeX": 0.25},
    )  # fmt: skip
    assert anisotropy_of(tmp_path / "o.ome.tif") == pytest.approx(4.0)
    tifffile.imwrite(tmp_path / "plain.tif", stack, photometric="minisblack")
    assert anisotropy_of(tmp_path / "plain.tif") is None
    group = zarr.open_group(tmp_path / "z.zarr", mode="w")
    group.create_array("0", shape=stack.shape, dtype="u1")
    group.attrs["multiscales"] = [
        {
            "axes": [{"name": "z"}, {"name": "y"}, {"name": "x"}],
            "datasets": [
                {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [2, 1, 1]}]}
            ],
        }
    ]
    assert anisotropy_of(tmp_path / "z.zarr") == pytest.approx(2.0)


def test_z_stack_in_3d_with_the_files_anisotropy(tmp_path, capsys):
    from napari_unet.metrics import average_precision
    from synthetic3d import ellipsoid_stack

    image, truth = ellipsoid_stack((8, 64, 64), 3.0, seed=1)
    tifffile.imwrite(
        tmp_path / "s.tif", (image.clip(0, None) * 1000).astype(np.uint16), imagej=True,
        resolution=(1 / 0.2, 1 / 0.2), metadata={"spacing": 0.6, "axes": "ZYX"},
    )  # fmt: skip
    out = tmp_path / "out"
    assert main(["segment", str(tmp_path / "s.tif"), "-o", str(out), "--z-mode", "3d"]) == 0
    assert "z-mode 3d, anisotropy 3 (from the file)" in capsys.readouterr().err  # said
    labels = tifffile.imread(out / "s_labels.tif")
    assert labels.shape == truth.shape
    assert average_precision(truth, labels, [0.5]).mean >= 0.9
    assert (
        main(
            [
                "segment",
                str(tmp_path / "s.tif"),
                "-o",
                str(out),
                "--z-mode",
                "slices",
                "--overwrite",
            ]
        )
        == 0
    )
    slices = tifffile.imread(out / "s_labels.tif")
    ids = [set(np.unique(s)) - {0} for s in slices]
    assert sum(map(len, ids)) == len(set().union(*ids))  # no id in two slices


def test_threshold_flags_reach_the_post_processing(tmp_path, capsys):
    """--seed-threshold / --foreground-threshold equal segment(postprocessing=...)."""
    from napari_unet.common.sample import load_sample

    image = load_sample()[0][:128, :128]  # the built-in model on a corner of the sample
    tifffile.imwrite(tmp_path / "a.tif", image)
    results = []
    for seed, foreground in ((0.5, 0.2), (0.5, 0.7)):
        out = tmp_path / f"out{foreground}"
        code = main(
            ["segment", str(tmp_path / "a.tif"), "-o", str(out), "--diameter", "none",
             "--seed-threshold", str(seed), "--foreground-threshold", str(foreground)]
        )  # fmt: skip
        assert code == 0, capsys.readouterr().err
        labels = tifffile.imread(out / "a_labels.tif")
        post = {"seed_threshold": seed, "foreground_threshold": foreground}
        np.testing.assert_array_equal(labels, segment(image, diameter=None, postprocessing=post))
        results.append(labels)
    assert (results[0] > 0).sum() > (results[1] > 0).sum() > 0  # lower threshold: wider masks
    for bad in ("0", "1", "nan", "x"):
        args = ["segment", str(tmp_path / "a.tif"), "-o", str(tmp_path / "bad")]
        assert main([*args, "--foreground-threshold", bad]) == 2
        assert "--foreground-threshold" in capsys.readouterr().err


def test_log_lines_never_share_a_line_with_the_progress_bar(capsys):
    import logging

    from tqdm import tqdm

    from napari_unet.cli import _BarSafeHandler

    handler = _BarSafeHandler()  # stderr, as main() sets it up
    logger = logging.getLogger("napari_unet.test_bar")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        with tqdm(total=2, desc="predict") as bar:
            bar.update(1)
            logger.warning("size pass")
        logger.warning("after the bar")
    finally:
        logger.removeHandler(handler)
    err = capsys.readouterr().err
    assert "\nsize pass\n" in err  # its own line, not glued to "predict ... 1/2"
    assert "after the bar" in err.splitlines()


def test_an_output_folder_that_is_the_input_folder_skips_earlier_results(
    tiny_model_file, tmp_path, capsys
):
    """A rerun into the input folder segments the images again, not a_labels.tif."""
    folder = tmp_path / "images"
    folder.mkdir()
    tifffile.imwrite(
        folder / "a.tif", (np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8)
    )
    args = ["segment", str(folder), "-o", str(folder), "--model", str(tiny_model_file),
            "--diameter", "none"]  # fmt: skip
    assert main(args) == 0
    assert main([*args, "--overwrite"]) == 0
    assert sorted(p.name for p in folder.iterdir()) == ["a.tif", "a_labels.tif"]
    assert "left out 1 earlier result(s)" in capsys.readouterr().err


def test_an_output_folder_inside_the_input_store_is_refused(tiny_model_file, tmp_path, capsys):
    store = tmp_path / "in.zarr"
    zarr.open_array(str(store), mode="w", shape=(64, 64), chunks=(32, 32), dtype="uint8")[:] = 5
    code = main(["segment", str(store), "-o", str(store / "out"), "--model", str(tiny_model_file)])
    assert code == 2 and "inside the input store" in capsys.readouterr().err
    assert not (store / "out").exists()


def test_a_tiff_of_several_images_says_which_one_it_reads(tmp_path, caplog):
    from napari_unet.common.readers import read_image

    path = tmp_path / "two.tif"
    tifffile.imwrite(path, np.zeros((32, 40), np.uint8))
    tifffile.imwrite(path, np.ones((16, 20), np.uint8), append=True)  # a second series
    with caplog.at_level("WARNING"):
        image, _ = read_image(path)
    assert image.shape == (32, 40)
    assert "holds 2 images of different shapes; reading the first, (32, 40)" in caplog.text


def test_a_cmyk_jpeg_is_read_as_its_colours(tmp_path):
    """Four ink channels are not RGBA: a grey picture saved as CMYK reads as that grey."""
    from PIL import Image

    from napari_unet.common.readers import read_image

    grey = np.zeros((48, 64), np.uint8)
    grey[10:30, 20:40] = 200
    path = tmp_path / "ink.jpg"
    Image.fromarray(grey).convert("RGB").convert("CMYK").save(path, "JPEG", quality=100)
    image, axes = read_image(path)
    assert image.shape == (48, 64, 3) and axes == "YXC"
    assert np.abs(image.mean(-1).astype(float) - grey).mean() < 3  # not the inverted K ink


def test_a_file_name_with_a_newline_stays_on_one_line(tiny_model_file, tmp_path, capsys):
    path = tmp_path / "new\nline.tif"
    tifffile.imwrite(path, (np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8))
    args = ["segment", str(path), "-o", str(tmp_path / "o"), "--model", str(tiny_model_file)]
    assert main([*args, "--diameter", "none"]) == 0
    lines = [ln for ln in capsys.readouterr().err.splitlines() if "objects" in ln]
    assert len(lines) == 1 and lines[0].startswith("'new\\nline.tif': ")


def test_ome_zarr_axes_that_do_not_fit_are_said_to_be_ignored(image, tmp_path, caplog):
    """Axes metadata that does not fit the array (two names for three axes, a name outside
    TCZYX) is not used, and the reader says so instead of guessing silently."""
    from napari_unet.common.readers import read_image

    for names in (["y", "x"], ["q", "y", "x"]):
        group = zarr.open_group(tmp_path / f"{''.join(names)}.zarr", mode="w")
        group.create_array("0", shape=(2, *image.shape), chunks=(1, 32, 32), dtype="u1")
        group.attrs["multiscales"] = [
            {"axes": [{"name": n} for n in names], "datasets": [{"path": "0"}]}
        ]
        caplog.clear()
        array, axes = read_image(tmp_path / f"{''.join(names)}.zarr")
        assert axes is None and array.shape == (2, *image.shape)
        assert f"its OME-Zarr axes {names} do not fit" in caplog.text and "--axes" in caplog.text
