"""Export a napari-unet model as a BioImage.IO model package (spec 0.5), tested before writing.

The package holds the weights as ``pytorch_state_dict`` with napari-unet's ``UNet`` as the
architecture, and for consumers without napari-unet as ``torchscript`` and (when onnxruntime
is installed to test them) ``onnx`` (:func:`napari_unet.model.export.export_onnx`); test tensors made from
real data, a cover image, a README with the validation figures and the instance
post-processing, the citations, and the full napari-unet model card under
``config.napari_unet`` (so napari-unet reads the package back as the same model).

The expected test output is computed by ``bioimageio.core`` from the ``pytorch_state_dict``
weights, then ``bioimageio.core.test_model`` checks every weight format against it; a package
that fails is not written.
"""

from __future__ import annotations

import getpass
import importlib.util
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..common.atomic import atomic_write
from ..common.errors import UserInputError
from ..model.files import library_versions, resolve_model
from ..model.unet import UNet
from . import artifacts, describe
from .offline import offline

log = logging.getLogger(__name__)

__all__ = ["ExportError", "export_bioimageio"]


class ExportError(UserInputError):
    """The package failed its own test (``bioimageio.core.test_model``) or validation."""


def export_bioimageio(
    model: UNet | str | os.PathLike | None,
    path: str | os.PathLike,
    *,
    name: str | None = None,
    description: str | None = None,
    authors: Sequence[str | dict[str, str]] | None = None,
    license: str = "BSD-3-Clause",
    training_data: str | None = None,
    cite: Sequence[dict[str, str]] = (),
    test_image: np.ndarray | None = None,
    onnx: bool | None = None,
) -> Path:
    """Write ``model`` as a BioImage.IO model package (a ``.zip``), after testing it.

    Parameters
    ----------
    model : UNet, path-like, "nuclei" or None
        The model, a ``.safetensors`` model file, or the built-in model.
    path : path-like
        The zip file to write (``NAME.zip``).
    name, description : str, optional
        Default: the model card's.
    authors : sequence of str or dict, optional
        Names (or ``{"name": ..., "affiliation": ..., "orcid": ...}``). Default: the card's
        ``authors``; "napari-unet developers" for the built-in model; else the user name.
    license : str
        SPDX identifier of the weights' license.
    training_data : str, optional
        What the model was trained on (for the documentation). The built-in model's
        training data (DSB 2018) and its citation are filled in automatically.
    cite : sequence of dict
        Extra citations ``{"text": ..., "doi": ...}``; the U-Net paper is always cited.
    test_image : ndarray of shape ([C,] [Z,] Y, X), optional
        Real data for the test tensors and cover; default: the bundled DSB 2018 sample.
    onnx : bool, optional
        Also write ONNX weights (tested with onnxruntime). Default: when onnxruntime is
        installed (``napari-unet[fast]``).

    Returns
    -------
    Path
        The written zip file.

    Raises
    ------
    ExportError
        The package does not validate, or ``bioimageio.core.test_model`` fails on it.
    """
    model = resolve_model(model)
    info = _card_info(model, name, description, authors, training_data, cite)
    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="napari-unet-bioimageio-") as tmp, offline():
        descr = _build_package(model, Path(tmp), info, license, test_image, onnx)
        _test(descr)
        _save(descr, path)
    log.info("wrote BioImage.IO package %s", path)
    return path


def _card_info(model: UNet, name, description, authors, training_data, cite) -> dict[str, Any]:
    card = model.card or {}
    builtin = describe.is_builtin(model)
    if authors is None:
        authors = card.get("authors") or (
            ["napari-unet developers"] if builtin else [getpass.getuser()]
        )
    citations = [describe.UNET_CITATION, *cite]
    if builtin:
        citations.append(describe.DSB_CITATION)
        training_data = training_data or describe.DSB_DATASET["description"]
    name = name or card.get("name") or "napari-unet model"
    if len(name) < 5:  # the spec wants at least 5 characters
        name = f"{name} (napari-unet)"
    return {
        "name": name,
        "description": description or card.get("description") or "A napari-unet U-Net.",
        "authors": [a if isinstance(a, dict) else {"name": str(a)} for a in authors],
        "cite": citations,
        "training_data_text": training_data,
        "builtin": builtin,
    }


def with_onnx(onnx: bool | None) -> bool:
    """Whether to add ONNX weights: asked for, or (``None``) when onnxruntime can test them."""
    has_ort = importlib.util.find_spec("onnxruntime") is not None
    if onnx and not has_ort:
        raise UserInputError(
            "ONNX weights are tested with onnxruntime: pip install onnxruntime (or onnx=False)"
        )
    return has_ort if onnx is None else bool(onnx)


def _build_package(model: UNet, root: Path, info: dict, license: str, test_image, onnx):
    """Write the package's files into ``root`` and return its validated description."""
    x = artifacts.test_image(model, test_image)
    np.save(root / "test_input.npy", x)
    np.save(root / "test_output.npy", np.zeros((1, model.num_classes, *x.shape[2:]), "float32"))
    artifacts.write_state_dict(model, root / "weights.pt")
    artifacts.write_torchscript(model, root / "weights.torchscript.pt", x.shape)
    onnx_file = None
    if with_onnx(onnx):
        from ..model.export import export_onnx

        onnx_file = export_onnx(model, root / "weights.onnx").name
    artifacts.write_documentation(root / "README.md", model, info)
    artifacts.write_cover(root / "cover.png", x[0], np.zeros((model.num_classes, *x.shape[2:])))
    content = _content(model, info, license, onnx_file)
    descr = _validate(content, root)
    y = _expected_output(descr)
    np.save(root / "test_output.npy", y)
    artifacts.write_cover(root / "cover.png", x[0], y[0])
    return _validate(content, root, final=True)


def _content(model: UNet, info: dict, license: str, onnx_file: str | None) -> dict[str, Any]:
    card = model.card or {}
    class_names = list(card.get("class_names") or [f"class{i}" for i in range(model.num_classes)])
    napari_unet = json.loads(
        json.dumps(
            {"format_version": 1, "architecture": model.config.to_dict(), **card},
            default=str,
        )
    )
    content: dict[str, Any] = {
        "type": "model",
        "format_version": "0.5.12",
        "name": info["name"],
        "description": info["description"],
        "authors": info["authors"],
        "cite": info["cite"],
        "license": license,
        "documentation": {"source": "README.md"},
        "covers": [{"source": "cover.png"}],
        "tags": describe.tags(model),
        "inputs": [describe.input_tensor(model, "test_input.npy")],
        "outputs": [describe.output_tensor(model, "test_output.npy", class_names)],
        "weights": describe.weights(model, "weights.pt", "weights.torchscript.pt", onnx_file),
        "config": {
            describe.CONFIG_KEY: napari_unet,
            "napari_unet_versions": library_versions(),
        },
    }
    if info["builtin"]:
        content["training_data"] = describe.DSB_DATASET
    return content


def _validate(content: dict[str, Any], root: Path, final: bool = False):
    """The validated description; ``final``: also hash the (local) files (sha256 in the rdf).

    The content names local files only, so the checks read no URL.
    """
    from bioimageio.spec import InvalidDescr, ValidationContext, build_description

    with ValidationContext(root=root, perform_io_checks=final):
        descr = build_description(content)
    if isinstance(descr, InvalidDescr):
        raise ExportError(
            "the package description does not validate:\n" + _errors(descr.validation_summary)
        )
    return descr


def _expected_output(descr) -> np.ndarray:
    """The test output: the test input through the ``pytorch_state_dict`` weights.

    As ``test_model`` recomputes it: one pass over the whole test input, normalised as a whole,
    without the halo padding a tiling consumer adds.
    """
    from bioimageio.core import create_prediction_pipeline
    from bioimageio.core.digest_spec import get_test_input_sample

    pipeline = create_prediction_pipeline(descr, weight_format="pytorch_state_dict")
    out = pipeline.predict_sample_without_blocking(
        get_test_input_sample(descr), skip_input_padding=True, skip_output_cropping=True
    )
    tensor = out.members[describe.OUTPUT_ID]
    return np.asarray(tensor.data, dtype=np.float32)


def _test(descr) -> None:
    from bioimageio.core import test_model

    summary = test_model(descr)
    for detail in summary.details:
        log.debug("test_model: %s: %s", detail.name, detail.status)
    if summary.status != "passed":
        raise ExportError("bioimageio.core.test_model failed:\n" + _errors(summary))
    log.info("bioimageio.core.test_model: %s", summary.status)


def _save(descr, path: Path) -> None:
    from bioimageio.spec import save_bioimageio_package

    if path.suffix != ".zip":
        raise UserInputError(f"the package file must end in .zip, got {path.name!r}")
    with atomic_write(path) as tmp:
        zipped = tmp.with_suffix(".zip")
        save_bioimageio_package(descr, output_path=zipped)
        zipped.replace(tmp)


def _errors(summary) -> str:
    lines = []
    for detail in summary.details:
        if detail.status != "passed":
            lines.append(f"- {detail.name}: {detail.status}")
            lines += [f"    {e.loc}: {e.msg}" for e in detail.errors]
    return "\n".join(lines) or summary.format()
