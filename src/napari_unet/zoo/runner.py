"""Run a BioImage.IO package's torchscript or onnx weights on one frame, tile by tile.

:class:`ZooModel` stands where a :class:`~napari_unet.model.unet.UNet` stands in
:func:`napari_unet.segment`: it has ``ndim``, ``in_channels``, ``num_classes`` and a ``card``
(task, class names), and :meth:`ZooModel.predict_iter` turns one raw frame ``(C, [Z,] Y, X)``
into the package's output ``(K, [Z,] Y, X)``. ``bioimageio.core`` does the work the package
describes: its pre-processing (statistics over the whole frame), blocks of the sizes the
package accepts (``min + n * step`` per axis) with its halo, the weights, its
post-processing. The frame is never normalised by napari-unet.
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..common.device import resolve_device
from ..common.errors import ModelFileError, ShapeError
from .describe import CONFIG_KEY
from .offline import offline

log = logging.getLogger(__name__)

#: largest block side (input pixels) per spatial axis
MAX_BLOCK = {"x": 1024, "y": 1024, "z": 128}


@dataclass(frozen=True)
class BlockProgress:
    """Progress of :meth:`ZooModel.predict_iter`: ``done`` of ``total`` blocks are finished."""

    done: int
    total: int


class ZooModel:
    """A BioImage.IO package, run by ``bioimageio.core`` with its own processing.

    Parameters
    ----------
    descr : bioimageio.spec.model.v0_5.ModelDescr
        The package's description (see :func:`~.package.load_package`).
    weight_format : {"torchscript", "onnx", "pytorch_state_dict"}
        The weights to run (already checked to run without shipped code).
    """

    def __init__(self, descr, weight_format: str) -> None:
        self.descr, self.weight_format = descr, weight_format
        self.input, self.output = descr.inputs[0], descr.outputs[0]
        in_axes = {_kind(a): a for a in self.input.axes}
        unknown = set(in_axes) - {"batch", "channel", "space"}
        if unknown:
            raise ModelFileError(
                f"{descr.name!r}: napari-unet runs inputs with batch, channel and space axes; "
                f"this one also has {sorted(unknown)} axes"
            )
        self.space = [str(a.id) for a in self.input.axes if _kind(a) == "space"]
        if self.space not in (["y", "x"], ["z", "y", "x"]) and sorted(self.space) not in (
            ["x", "y"],
            ["x", "y", "z"],
        ):
            raise ModelFileError(f"{descr.name!r}: unsupported spatial axes {self.space}")
        self.space = [a for a in "zyx" if a in self.space]
        self.in_channels = _channel_count(self.input)
        self.num_classes = _channel_count(self.output)
        self.card = self._card()
        self._pipelines: dict[str, Any] = {}

    @property
    def ndim(self) -> int:
        return len(self.space)

    def __repr__(self) -> str:
        return f"ZooModel({self.descr.name!r}, {self.weight_format})"

    def _card(self) -> dict[str, Any]:
        """A model card: napari-unet's own (from ``config.napari_unet``) or one made up.

        The normalisation is the package's pre-processing, never napari-unet's.
        """
        ours = dict((self.descr.config.model_extra or {}).get(CONFIG_KEY) or {})
        for key in ("format_version", "architecture"):
            ours.pop(key, None)
        names = _channel_names(self.output) or [f"class{i}" for i in range(self.num_classes)]
        instance = ours.get("task") == "instance" and self.num_classes == 3
        return {
            **ours,
            "name": self.descr.name,
            "description": self.descr.description,
            "task": "instance" if instance else "semantic",
            "class_names": ours.get("class_names", names),
            "input": {"axes": "".join(self.space).upper(), "channels": self.in_channels},
            "normalization": {"method": "package"},
            "bioimageio": {"weights": self.weight_format},
        }

    # -- prediction ---------------------------------------------------------------------
    def pipeline(self, device: str = "auto"):
        """The ``bioimageio.core`` prediction pipeline on ``device`` (made once per device)."""
        dev = str(resolve_device(device))
        if dev not in self._pipelines:
            from bioimageio.core import create_prediction_pipeline

            with offline():
                self._pipelines[dev] = create_prediction_pipeline(
                    self.descr, devices=[dev], weight_format=self.weight_format
                )
        return self._pipelines[dev]

    def predict_iter(
        self, frame: np.ndarray, *, device: str = "auto", out: Any = None
    ) -> Generator[Any, None, Any]:
        """The package's output for one raw frame, block by block.

        Parameters
        ----------
        frame : ndarray of shape (C, [Z,] Y, X)
            Raw intensities (the package normalises them).
        device : str
            ``"auto"``, ``"cpu"``, ``"cuda"``.
        out : array of shape (K, [Z,] Y, X), optional
            Where to write the result.

        Yields
        ------
        BlockProgress
            After each block (``done``, ``total``, like the tiling's ``TileProgress``).

        Returns
        -------
        ndarray of shape (K, [Z,] Y, X), float32 (or ``out``)
        """
        arr = np.asarray(frame, dtype=np.float32)
        if arr.shape[0] != self.in_channels or arr.ndim != self.ndim + 1:
            raise ShapeError(
                f"{self.descr.name!r} takes frames ({self.in_channels}, "
                f"{', '.join(self.space)}), got shape {arr.shape}"
            )
        pipeline = self.pipeline(device)
        targets = self._one_block_shape(arr.shape[1:])
        with offline():
            if targets is not None:
                result = self._predict_one_block(pipeline, arr, targets)
                yield BlockProgress(done=1, total=1)
            else:
                result = yield from self._predict_blocks(pipeline, arr)
        if tuple(result.shape[1:]) != arr.shape[1:]:
            raise ShapeError(
                f"{self.descr.name!r}: the output {result.shape} does not match the input "
                f"frame {arr.shape}; napari-unet runs packages whose output has the input's size"
            )
        if out is None:
            return result
        out[...] = result
        return out

    def _one_block_shape(self, shape: tuple[int, ...]) -> list[int] | None:
        """The smallest input the package takes that holds the whole frame, if not too large."""
        sizes, targets = self._sizes(), []
        for axis, n in zip(self.space, shape):
            size = sizes[axis]
            if isinstance(size, int):
                target = size
            elif hasattr(size, "step"):
                target = size.min + max(-(-(n - size.min) // size.step), 0) * size.step
            else:
                raise ModelFileError(f"{self.descr.name!r}: unsupported input size {size!r}")
            if target < n or target > max(MAX_BLOCK[axis], _smallest(size)):
                return None
            targets.append(target)
        return targets

    def _predict_one_block(self, pipeline, arr: np.ndarray, targets: list[int]) -> np.ndarray:
        """One pass: normalise the frame as a whole, reflect-pad it at the end to ``targets``."""
        sample, _ = self._sample(arr)
        pipeline.apply_preprocessing(sample)  # statistics of the frame itself, not the padding
        pad = {
            self.input.id: {
                size_axis_id(self.input, a): (0, t - n)
                for a, t, n in zip(self.space, targets, arr.shape[1:])
            }
        }
        padded = sample.pad(pad, mode="reflect")
        out = pipeline.predict_sample_without_blocking(
            padded, skip_preprocessing=True, skip_input_padding=True, skip_output_cropping=True
        )
        result = self._to_array(out.members[self.output.id])
        return result[(slice(None), *(slice(0, n) for n in arr.shape[1:]))]

    def _predict_blocks(self, pipeline, arr: np.ndarray):
        """Blocks of the package's sizes with its halo (frames larger than one block)."""
        padded, crop = self._pad_to_minimum(arr)
        sample, ns = self._sample(padded)
        n_blocks, steps = pipeline.predict_sample_with_blocking_yield_intermediates(
            sample, ns=ns, batch_size=1
        )
        last = None
        for i, step in enumerate(steps):
            last = step
            yield BlockProgress(done=i + 1, total=n_blocks)
        return self._to_array(last.sample.members[self.output.id])[(slice(None), *crop)]

    def _sizes(self) -> dict[str, Any]:
        return {str(a.id): a.size for a in self.input.axes if _kind(a) == "space"}

    def _pad_to_minimum(self, arr: np.ndarray) -> tuple[np.ndarray, tuple[slice, ...]]:
        """Reflect-pad axes shorter than the package's smallest input; the crop undoes it."""
        sizes, pads = self._sizes(), [(0, 0)]
        for axis, n in zip(self.space, arr.shape[1:]):
            need = _smallest(sizes[axis])
            extra = max(need - n, 0)
            pads.append((extra // 2, extra - extra // 2))
        if not any(p != (0, 0) for p in pads):
            return arr, tuple(slice(None) for _ in self.space)
        mode = "reflect" if all(n > 1 for n in arr.shape[1:]) else "edge"
        padded = np.pad(arr, pads, mode=mode)
        crop = tuple(slice(lo, lo + n) for (lo, _), n in zip(pads[1:], arr.shape[1:]))
        return padded, crop

    def _sample(self, arr: np.ndarray):
        """The frame as a ``bioimageio.core`` sample, and the block size parameter per axis."""
        from bioimageio.core import Sample, Tensor

        dims = ["batch", "channel", *self.space]
        data = arr[None]
        has_channel = any(_kind(a) == "channel" for a in self.input.axes)
        if not has_channel:
            dims.remove("channel")
            data = data[:, 0]
        tensor = Tensor.from_numpy(data, dims=dims)
        order = [str(a.id) for a in self.input.axes]
        tensor = tensor.transpose([d for d in order])
        ns = {}
        for axis, size in self._sizes().items():
            if hasattr(size, "step"):
                limit = min(arr.shape[1 + self.space.index(axis)], max(MAX_BLOCK[axis], size.min))
                ns[(self.input.id, size_axis_id(self.input, axis))] = max(
                    (limit - size.min) // size.step, 0
                )
        return Sample(members={self.input.id: tensor}, stat={}, id="frame"), ns

    def _to_array(self, tensor) -> np.ndarray:
        dims = [str(d) for d in tensor.dims]
        if "channel" not in dims:
            tensor = tensor.expand_dims("channel") if hasattr(tensor, "expand_dims") else tensor
            dims = [str(d) for d in tensor.dims]
        data = np.asarray(tensor.data)
        if "channel" not in dims:
            data, dims = data[..., None], [*dims, "channel"]
        want = ["channel", *self.space]
        keep = [d for d in dims if d in want]
        index = tuple(0 if d not in want else slice(None) for d in dims)
        data = data[index]
        return np.ascontiguousarray(np.transpose(data, [keep.index(d) for d in want]), np.float32)


def size_axis_id(tensor, axis: str):
    return next(a.id for a in tensor.axes if str(a.id) == axis)


def _kind(axis) -> str:
    return str(getattr(axis, "type", "")) or type(axis).__name__.lower()


def _channel_count(tensor) -> int:
    names = _channel_names(tensor)
    return len(names) if names else 1


def _channel_names(tensor) -> list[str]:
    for axis in tensor.axes:
        if _kind(axis) == "channel":
            return [str(n) for n in axis.channel_names]
    return []


def _smallest(size) -> int:
    """The smallest input length an axis takes (fixed size, or ``min``)."""
    if isinstance(size, int):
        return size
    if hasattr(size, "min"):
        return int(size.min)
    raise ModelFileError(f"unsupported input axis size {size!r} (napari-unet needs min + step)")
