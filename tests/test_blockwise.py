"""Blockwise z_mode "3d" (inference/volumes/blockwise): the blocks' labels equal the in-memory
labels.

Oracles: a U-Net whose forward pass is a threshold (its labels are known exactly, and its
blocks see exactly the whole volume's probabilities), then the built-in nuclei model on a
synthetic stack of textured ellipsoids (tests/synthetic3d.py), whose in-memory ``"3d"``
labels the blockwise labels must match (AP@0.9 >= 0.99 of one against the other).
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import torch
import zarr
from scipy import ndimage as ndi

from napari_unet import UNet, segment
from napari_unet.cli import main
from napari_unet.common.errors import UserInputError
from napari_unet.inference.pipeline import segment_iter
from napari_unet.inference.volumes import blockwise, zstack
from napari_unet.inference.volumes.blockwise import plan as plan_module
from napari_unet.metrics import average_precision
from synthetic3d import ellipsoid_stack


class ThresholdNet(UNet):
    """Interior where the normalised input is above 0.5, else background (pointwise)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = x[:, :1]
        return torch.cat([8 * (0.5 - v), 8 * (v - 0.5), torch.full_like(v, -30.0)], dim=1)


@pytest.fixture
def net():
    model = ThresholdNet(1, 3, depth=2, base_filters=4).eval()  # receptive field 23 px
    model.card = {"task": "instance", "normalization": {"method": "minmax"}}
    return model


@pytest.fixture(scope="module")
def stack():
    """40 x 112 x 112 voxels, anisotropy 2, ~100 ellipsoids of 16-22 px."""
    image, truth = ellipsoid_stack((40, 112, 112), 2.0, seed=3)
    return image, truth


def _consecutive(labels) -> bool:
    ids = np.unique(np.asarray(labels))
    return np.array_equal(ids, np.arange(ids[-1] + 1))


def _same_partition(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return np.array_equal(a == 0, b == 0) and pairs.shape[1] == len(np.unique(a)) == len(
        np.unique(b)
    )


def _cut(labels: np.ndarray, block) -> int:
    """Objects of ``labels`` that cross a face between blocks of ``block`` voxels."""
    cut: set[int] = set()
    for axis, step in enumerate(block):
        for edge in range(step, labels.shape[axis], step):
            lo, hi = np.take(labels, edge - 1, axis), np.take(labels, edge, axis)
            cut |= set(np.unique(lo[(lo == hi) & (lo > 0)]).tolist())
    return len(cut)


# -- the plan ----------------------------------------------------------------------------------
def test_cores_tile_the_volume_once_and_windows_hold_the_halo():
    shape, block, halo, align = (21, 50, 47), (8, 16, 20), (3, 10, 10), (4, 4, 4)
    plan = blockwise.plan_blocks(shape, block, halo, align)
    assert plan.grid_shape == (3, 4, 3) and len(plan.blocks) == 36
    seen = np.zeros(shape, int)
    for blk in plan.blocks:
        seen[blk.core] += 1
        for c, o, h, n, g in zip(blk.core, blk.outer, halo, shape, align):
            assert o.start % g == 0 and o.start <= max(c.start - h, 0)
            assert o.stop == min(c.stop + h, n)
        for axis, below in plan.below(blk):
            assert below.core[axis].stop == blk.core[axis].start
            assert [below.core[a] for a in range(3) if a != axis] == [
                blk.core[a] for a in range(3) if a != axis
            ]
    assert (seen == 1).all()


def test_halo_covers_the_receptive_field_and_the_objects():
    model = UNet(1, 3, depth=4, base_filters=4)
    assert blockwise.block_halo(model, 2.0) == (55, 107, 107)  # receptive field 107 px
    assert blockwise.block_halo(model, 1.0, diameter=80) == (161, 160, 160)
    assert plan_module.pooling_align(model, 3.0) == (16, 16, 16)
    assert plan_module.pooling_align(model, 2.5) == (32, 16, 16)  # 32 slices: 80 rows


def test_default_block_fits_the_memory_reads_least_and_follows_the_chunks():
    shape, halo, budget = (200, 2048, 2048), (28, 107, 107), 1e9
    free = blockwise.default_block(shape, halo, 4.0, budget=budget)
    plan = blockwise.plan_blocks(shape, free, halo)
    assert plan.max_outer_voxels() * plan_module.BYTES_PER_VOXEL <= budget
    # the physical cube of the same budget (z = edge / 4) reads more than the chosen block
    cube = (44, 176, 176)
    assert (
        blockwise.plan_blocks(shape, cube, halo).max_outer_voxels() * plan_module.BYTES_PER_VOXEL
        <= budget
    )
    assert plan_module.read_factor(shape, free, halo) < plan_module.read_factor(shape, cube, halo)
    block = blockwise.default_block(shape, halo, 4.0, chunks=(1, 32, 32), budget=budget)
    assert block[1] % 32 == 0 and block[2] % 32 == 0 and block[1] >= 0.75 * free[1]
    # a chunk larger than the block that fits: the block is not cut to a chunk's size
    big = blockwise.default_block(shape, halo, 4.0, chunks=(1, 2048, 2048), budget=budget)
    assert big == free
    assert blockwise.default_block((20, 64, 64), halo, 4.0, budget=budget) == (20, 64, 64)


@pytest.mark.parametrize("bad", [(0, 64, 64), (64, 64), "64", (8.5, 64, 64), (True, 4, 4)])
def test_bad_blocks_are_refused_naming_the_argument(bad):
    with pytest.raises(UserInputError, match="block must be three positive"):
        blockwise.check_block(bad)


@pytest.mark.parametrize("block", [(1, 1, 1), (8, 16, 16)])
def test_blocks_much_smaller_than_the_halo_are_refused_before_any_work(block, monkeypatch):
    """A block of 16 px against a 107 px halo would read each voxel ~60 times: refused at once
    (it used to run for minutes), naming the size that works."""
    volume = da.zeros((8, 128, 128), np.float32, chunks=(8, 64, 64))

    def never(*args, **kwargs):
        raise AssertionError("a block was segmented")

    monkeypatch.setattr(blockwise.run, "label_block", never)
    with pytest.raises(UserInputError, match=r"read and segmented about \d+ times.*at least 107"):
        segment(volume, axes="ZYX", z_mode="3d", block=block, diameter=None)


# -- merging -----------------------------------------------------------------------------------
def test_faces_join_the_same_object_and_not_touching_neighbours():
    theirs = np.array([[1, 1, 1, 2, 2, 2, 0, 7]])
    ours = np.array([[5, 5, 5, 5, 6, 6, 0, 9]])  # one rim voxel of 2 went to 5
    pairs = blockwise.face_pairs(theirs, ours, np.array([5, 6]))
    assert sorted(map(tuple, pairs.T.tolist())) == [(1, 5), (2, 6)]  # 9 is not in our core
    merger = blockwise.FaceMerger()
    assert merger.add_block(3, np.array([0, 1, 2])) == 0  # local id 3: only in the halo
    assert merger.add_block(2, np.array([1, 2])) == 3
    merger.add_pairs(np.array([[2], [4]]))  # block 0's 2 is block 1's 1
    mapping, n = merger.mapping()
    assert n == 3 and mapping.tolist() == [0, 1, 2, 0, 2, 3]


# -- equivalence -------------------------------------------------------------------------------
def test_blocks_equal_the_whole_volume_with_halos_inside_it(net):
    image, _ = ellipsoid_stack((24, 160, 160), 4.0, seed=3)
    kw = {"axes": "ZYX", "z_mode": "3d", "anisotropy": 4.0, "min_size": 1, "diameter": None}
    whole = segment(image, net, **kw)
    block = (12, 80, 80)
    plan = blockwise.plan_blocks(image.shape, block, blockwise.block_halo(net, 4.0))
    assert max(b.outer_voxels for b in plan.blocks) < image.size / 2.5  # halos really crop
    assert _cut(whole, block) >= 20
    events = []
    blocks = segment(image, net, **kw, block=block, progress=events.append)
    assert isinstance(blocks, np.ndarray) and blocks.dtype == np.int32
    assert _same_partition(blocks, whole) and _consecutive(blocks)
    assert sum(e.stage == blockwise.merge.MERGE_STAGE for e in events) == len(plan.blocks)


def test_time_points_semantic_and_probabilities_in_blocks(net, stack):
    image = stack[0][:16, :48, :48]
    movie = np.stack([image, image[:, ::-1]])
    kw = {"axes": "TZYX", "z_mode": "3d", "anisotropy": 2.0, "min_size": 1, "diameter": None}
    labels = segment(movie, net, **kw, block=(8, 24, 24))
    for t in range(2):  # every time point numbered 1..n on its own
        assert _same_partition(labels[t], segment(movie[t], net, **{**kw, "axes": "ZYX"}))
        assert _consecutive(labels[t])
    semantic = segment(image, net, **{**kw, "axes": "ZYX"}, output="semantic", block=(8, 24, 24))
    np.testing.assert_array_equal(
        semantic, segment(image, net, **{**kw, "axes": "ZYX"}, output="semantic")
    )
    probs = segment(image, net, **{**kw, "axes": "ZYX"}, output="probabilities", block=(5, 20, 20))
    whole = segment(image, net, **{**kw, "axes": "ZYX"}, output="probabilities")
    np.testing.assert_allclose(probs, whole, atol=1e-5)


def test_builtin_model_blocks_match_the_in_memory_run():
    """Issue 28 item 3: AP@0.9 >= 0.99 of the blockwise labels against the in-memory ones."""
    image, truth = ellipsoid_stack((32, 96, 96), 2.0, seed=0)
    block = (16, 48, 48)
    whole = segment(image, axes="ZYX", z_mode="3d", anisotropy=2.0, diameter=None)
    assert _cut(whole, block) >= 10  # the blocks cut many objects
    lazy = da.from_array(image, chunks=(8, 48, 48))
    blocks = np.asarray(
        segment(lazy, axes="ZYX", z_mode="3d", anisotropy=2.0, diameter=None, block=block)
    )
    ap = average_precision(whole, blocks, [0.5, 0.9])
    assert ap.scores[1] >= 0.99, ap
    assert _consecutive(blocks) and blocks.max() == whole.max()
    assert average_precision(truth, blocks, [0.5]).mean >= 0.9


# -- zarr output, cancelling, memory, clusters, the CLI ----------------------------------------
def test_zarr_output_gets_its_name_only_when_merged(net, stack, tmp_path):
    image = stack[0][:16, :48, :48]
    source = zarr.open_array(tmp_path / "in.zarr", mode="w", shape=image.shape, chunks=(8, 24, 24))
    source[:] = image
    final = tmp_path / "out_labels.zarr"
    exists_while_merging = []

    def watch(event):
        if event.stage == blockwise.merge.MERGE_STAGE:
            exists_while_merging.append(final.exists())

    labels = segment(
        source, net, axes="ZYX", anisotropy=2.0, min_size=1, block=(8, 24, 24), out=final,
        progress=watch,
    )  # fmt: skip
    assert exists_while_merging and not any(exists_while_merging)
    assert isinstance(labels, da.Array) and zarr.open_array(final).chunks == (8, 24, 24)
    expected = segment(image, net, axes="ZYX", anisotropy=2.0, min_size=1, block=(8, 24, 24))
    np.testing.assert_array_equal(zarr.open_array(final)[:], expected)
    # z_mode "3d" is the default for zarr z-stacks: the objects are 3D, not linked slices
    np.testing.assert_array_equal(np.asarray(labels), expected)


def test_closing_the_run_leaves_no_output(net, stack, tmp_path):
    lazy = da.from_array(stack[0][:16, :48, :48], chunks=(8, 24, 24))
    final = tmp_path / "labels.zarr"
    gen = segment_iter(
        lazy, net, axes="ZYX", z_mode="3d", block=(8, 24, 24), out=final, diameter=None
    )
    for event in gen:
        if event.stage == "postprocess":
            break
    gen.close()
    assert list(tmp_path.iterdir()) == []


def test_a_block_that_cannot_fit_is_refused_before_any_work(net, monkeypatch):
    from napari_unet.common import device

    monkeypatch.setattr(device, "available_memory", lambda: 1_000_000)
    lazy = da.zeros((16, 64, 64), chunks=(8, 32, 32), dtype=np.uint8) + 1
    with pytest.raises(UserInputError, match=r"--block Z Y X"):
        segment(lazy, net, axes="ZYX", z_mode="3d", block=(16, 64, 64), diameter=None)


def test_a_cluster_runs_one_task_per_block_with_the_same_labels(net, stack):
    from dask.utils import key_split
    from distributed import Client

    image = stack[0][:16, :48, :48]
    kw = {"axes": "ZYX", "anisotropy": 2.0, "min_size": 1, "diameter": None, "block": (8, 24, 24)}
    expected = segment(image, net, **kw)
    with Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None) as c:
        c.get_task_stream()  # installs the scheduler's task-stream plugin
        labels = segment(image, net, **kw, client=c)  # z_mode "3d" by default on a cluster
        tasks = [key_split(t["key"]) for t in c.get_task_stream()]
    assert isinstance(labels, np.ndarray)
    np.testing.assert_array_equal(labels, expected)
    assert tasks.count("block_task") == 8  # 2 x 2 x 2 blocks
    assert zstack.resolve_z_mode(None, "ZYX", net, "instance", lazy=True) == "3d"


def test_cli_block_writes_the_python_result(tmp_path):
    image, _ = ellipsoid_stack((16, 64, 64), 2.0, seed=1)
    image = np.clip(image * 1000 + 100, 0, 65535).astype(np.uint16)
    source = zarr.open_array(
        tmp_path / "stack.zarr", mode="w", shape=image.shape, chunks=(8, 32, 32)
    )
    source[:] = image
    out = tmp_path / "out"
    args = ["segment", str(tmp_path / "stack.zarr"), "-o", str(out), "--axes", "ZYX"]
    args += ["--anisotropy", "2", "--diameter", "none", "--block", "8", "32", "32"]
    assert main(args) == 0
    written = zarr.open_array(out / "stack_labels.zarr", mode="r")[:]
    expected = segment(source, axes="ZYX", anisotropy=2.0, diameter=None, block=(8, 32, 32))
    assert written.max() >= 5 and _consecutive(written)
    np.testing.assert_array_equal(written, np.asarray(expected))
    assert main([*args[:-4], "--block", "8", "0", "32", "-o", str(tmp_path / "o2")]) == 2


def test_blocks_and_threshold_objects_agree_with_connected_components(net):
    image = np.full((12, 40, 48), 10, np.uint8)
    z, y, x = np.indices(image.shape)
    image[((z - 6) / 5.0) ** 2 + ((y - 20) / 12.0) ** 2 + ((x - 24) / 14.0) ** 2 <= 1] = 200
    labels = segment(image, net, axes="ZYX", min_size=1, diameter=None, block=(4, 16, 16))
    truth = ndi.label(image > 100)[0]
    assert labels.max() == 1 and _same_partition(labels, truth)  # one object over 27 blocks


# -- a stopped run resumes its finished blocks --------------------------------------------------
def _zarr_stack(path, image, chunks=(8, 24, 24)):
    store = zarr.open_array(path, mode="w", shape=image.shape, chunks=chunks, dtype=image.dtype)
    store[:] = image
    return store


def _stop_after_blocks(image, net, final, n, **kw):
    """Run into ``final`` and close the run once ``n`` blocks are finished (as Cancel does)."""
    kw = {"axes": "ZYX", "anisotropy": 2.0, "min_size": 1, "diameter": None, **kw}
    gen = segment_iter(image, net, out=final, **kw)
    for event in gen:
        if event.stage == "postprocess" and event.total == 8 and event.done == n:
            break
    gen.close()


def test_a_stopped_zarr_run_resumes_from_its_finished_blocks(net, stack, tmp_path, caplog):
    from napari_unet.inference.volumes.blockwise.resume import ledger_path

    image = stack[0][:16, :48, :48]
    source = _zarr_stack(tmp_path / "in.zarr", image)
    final = tmp_path / "out_labels.zarr"
    kw = {"axes": "ZYX", "anisotropy": 2.0, "min_size": 1, "diameter": None, "block": (8, 24, 24)}
    _stop_after_blocks(source, net, final, 3, block=(8, 24, 24))
    kept = ledger_path(final)
    assert not final.exists() and len(list((kept / "blocks").glob("*.npz"))) == 3
    assert "kept 3 of 8 finished blocks" in caplog.text

    caplog.clear()
    segmented = []
    labels = segment(
        source, net, out=final, **kw,
        progress=lambda e: segmented.append(e.done) if e.stage == "postprocess" and e.total == 8 else None,
    )  # fmt: skip
    assert "3 of 8 blocks are already done" in caplog.text
    assert segmented == [4, 5, 6, 7, 8]  # only the blocks the stopped run lacked
    expected = segment(image, net, **kw)  # one run, in memory
    np.testing.assert_array_equal(np.asarray(labels), expected)
    assert _consecutive(expected) and expected.max() >= 10
    assert not kept.exists()  # the work folder goes once the output is complete


def test_a_kept_run_is_not_resumed_with_other_settings_or_another_volume(net, stack, tmp_path):
    from napari_unet.inference.volumes.blockwise.resume import ledger_path

    image = stack[0][:16, :48, :48]
    source = _zarr_stack(tmp_path / "in.zarr", image)
    final = tmp_path / "out_labels.zarr"
    _stop_after_blocks(source, net, final, 2, block=(8, 24, 24))
    kept = ledger_path(final)
    records = sorted((kept / "blocks").glob("*.npz"))
    assert len(records) == 2
    kw = {"axes": "ZYX", "anisotropy": 2.0, "diameter": None, "out": final}
    with pytest.raises(
        UserInputError,
        match=r"differ in: block \(\[8, 24, 24\] then, \[16, 24, 24\] now\).*delete the folder",
    ):
        segment(source, net, min_size=1, block=(16, 24, 24), **kw)
    with pytest.raises(UserInputError, match=r"differ in: post-processing"):
        segment(source, net, min_size=5, block=(8, 24, 24), **kw)
    brighter = _zarr_stack(tmp_path / "other.zarr", (image * 0.5).astype(image.dtype))
    with pytest.raises(UserInputError, match=r"other intensities"):
        segment(brighter, net, min_size=1, block=(8, 24, 24), **kw)
    assert sorted((kept / "blocks").glob("*.npz")) == records  # nothing of it was lost
    assert not final.exists()


def test_a_killed_cli_run_resumes_where_it_stopped(tmp_path):
    """As a user: the CLI run is killed (SIGKILL) after its first blocks; the same command
    again says it resumes and writes the labels of a run that was never stopped."""
    import signal
    import subprocess
    import sys
    import time

    image, _ = ellipsoid_stack((16, 64, 64), 2.0, seed=1)
    image = np.clip(image * 1000 + 100, 0, 65535).astype(np.uint16)
    source = _zarr_stack(tmp_path / "stack.zarr", image, chunks=(8, 32, 32))
    out = tmp_path / "out"
    args = ["segment", str(tmp_path / "stack.zarr"), "-o", str(out), "--axes", "ZYX"]
    args += ["--anisotropy", "2", "--diameter", "none", "--block", "8", "32", "32"]
    run = subprocess.Popen(
        [sys.executable, "-m", "napari_unet", *args], stderr=subprocess.PIPE, text=True
    )
    records = out / ".stack_labels.zarr.partial" / "blocks"
    deadline = time.monotonic() + 300
    while not list(records.glob("f*.npz")):
        assert run.poll() is None and time.monotonic() < deadline, run.stderr.read()
        time.sleep(0.05)
    run.send_signal(signal.SIGKILL)
    run.communicate(timeout=60)
    done = len(list(records.glob("f*.npz")))
    assert 1 <= done < 8 and not (out / "stack_labels.zarr").exists()

    again = subprocess.run(
        [sys.executable, "-m", "napari_unet", *args], capture_output=True, text=True, timeout=600
    )
    assert again.returncode == 0, again.stderr
    assert f"{done} of 8 blocks are already done" in again.stderr
    written = zarr.open_array(out / "stack_labels.zarr", mode="r")[:]
    expected = segment(source, axes="ZYX", anisotropy=2.0, diameter=None, block=(8, 32, 32))
    np.testing.assert_array_equal(written, np.asarray(expected))
    assert written.max() >= 5 and sorted(p.name for p in out.iterdir()) == ["stack_labels.zarr"]
