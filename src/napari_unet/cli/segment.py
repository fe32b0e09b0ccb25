"""``napari-unet segment INPUT... -o OUTDIR``: segment TIFF and zarr / OME-Zarr images."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

TIFF_SUFFIXES = (".tif", ".tiff")
#: tifffile's axis letters that mean the same as ours (S: the samples of an RGB image)
_TIFF_AXES = {"S": "C"}
#: napari_unet.inference.engines.ENGINES (not imported here: it would import torch)
ENGINES = ("auto", "torch", "openvino", "onnxruntime")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "segment",
        help="segment images with a U-Net model",
        description="Segment TIFF or zarr / OME-Zarr images. Writes <name>_labels.tif per TIFF "
        "input (<name>_labels.zarr per zarr input) into OUTDIR, or <name>_probabilities.* "
        "with --output probabilities.",
    )
    p.add_argument(
        "inputs", nargs="+", metavar="INPUT", help="TIFF files or zarr / OME-Zarr folders"
    )
    p.add_argument(
        "-o", "--outdir", required=True, metavar="OUTDIR", help="output folder (created)"
    )
    p.add_argument(
        "--model",
        metavar="PATH",
        help="a .safetensors model file (default: the built-in nuclei model)",
    )
    p.add_argument(
        "--axes",
        metavar="AXES",
        help="axes of the inputs, e.g. YX, ZYX, YXC, TCYX (default: from the file, else guessed)",
    )
    p.add_argument(
        "--tile", type=int, metavar="N", help="tile size in pixels (default: from the model)"
    )
    p.add_argument(
        "--overlap",
        type=float,
        metavar="F",
        help="tile overlap: pixels (>= 1), or a fraction of --tile (< 1); "
        "default: from the model's receptive field",
    )
    p.add_argument("--batch-size", type=int, metavar="B", help="tiles per batch")
    p.add_argument(
        "--output",
        choices=("instance", "semantic", "probabilities"),
        help="what to write (default: the model's task)",
    )
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
    p.add_argument(
        "--engine",
        default="auto",
        choices=ENGINES,
        help="what runs the network: 'auto' (default) picks the fastest installed engine "
        "verified for the model (OpenVINO or ONNX Runtime from napari-unet[fast], on the CPU, "
        "for images of at least 1 MPix or models exported before; else torch); the first use "
        "of a model exports it once to the cache folder",
    )
    p.add_argument(
        "--min-size",
        type=int,
        default=None,
        metavar="PX",
        help="smallest object kept, in pixels (instance output; default: the model card's, else 10)",
    )
    size = p.add_mutually_exclusive_group()
    size.add_argument(
        "--scale",
        type=float,
        default=1.0,
        metavar="F",
        help="resample the image by F before segmenting (e.g. 0.5 for nuclei twice the size "
        "the model expects); the labels come back at the image's size",
    )
    size.add_argument(
        "--diameter",
        type=_diameter,
        default="auto",
        metavar="PX",
        help="typical object diameter in pixels; sets --scale from the model's expected "
        "diameter (about 20 px for the built-in nuclei model). 'auto' (default): measure the "
        "objects first and resample only if they are outside the sizes the model was trained "
        "on (10-40 px for the built-in model); 'none': never resample",
    )
    p.add_argument(
        "--z-mode",
        choices=("3d", "stitch", "slices"),
        default=None,
        help="Z stacks with a 2D model: '3d' predicts the YX, ZX and ZY planes and builds 3D "
        "objects (default for instance output; about 1 + 2 x anisotropy times slower), "
        "'stitch' links per-slice objects across z by IoU, 'slices' keeps per-slice objects "
        "(ids unique over the stack). Time points keep their own ids",
    )
    p.add_argument(
        "--anisotropy",
        type=float,
        default=None,
        metavar="F",
        help="z step / xy pixel size of a Z stack (e.g. 3 for 0.6 um slices of 0.2 um pixels); "
        "default: from the TIFF / OME-Zarr metadata when present, else 1",
    )
    p.add_argument(
        "--stitch-threshold",
        type=float,
        default=None,
        metavar="IOU",
        help="--z-mode stitch: the smallest IoU that links objects of neighbouring slices "
        "(default 0.2)",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace output files that already exist"
    )
    p.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="compute on the dask.distributed cluster of this scheduler (e.g. tcp://HOST:8786; "
        "default: $DASK_SCHEDULER_ADDRESS, else in this process); the inputs and OUTDIR must "
        "be on storage every worker reaches",
    )
    p.set_defaults(func=run)


def _diameter(text: str) -> float | str | None:
    """``--diameter``: a positive number of pixels, 'auto' or 'none'."""
    word = text.strip().lower()
    if word in ("auto", "none"):
        return None if word == "none" else "auto"
    try:
        value = float(word)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number of pixels, 'auto' or 'none', got {text!r}"
        ) from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"the diameter must be positive, got {text!r}")
    return value


def run(args: argparse.Namespace) -> int:
    from ..common.errors import UserInputError
    from ..model.files import load_model

    try:
        model = load_model(args.model)  # None: the built-in model
    except UserInputError as err:
        if args.model is None:
            raise UserInputError(f"{err} (no built-in model: pass one with --model PATH)") from err
        raise
    inputs = [Path(p) for p in args.inputs]
    for path in inputs:
        if not path.exists():
            raise UserInputError(f"input not found: {path}")
    outdir = Path(args.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    with _cluster(args.scheduler) as client:
        for path in inputs:
            written = segment_file(path, outdir, model, args, client)
            log.info("%s -> %s", path, written)
            print(written)
    return 0


def _cluster(scheduler: str | None):
    """A checked dask.distributed client for ``--scheduler`` (or the environment), or None."""
    import contextlib
    import sys

    from ..inference.cluster import cluster_client, scheduler_address

    address = scheduler_address(scheduler)
    if address is None:
        return contextlib.nullcontext(None)
    print(f"computing on the dask cluster at {address}", file=sys.stderr)
    return cluster_client(address)


def segment_file(
    path: Path, outdir: Path, model, args: argparse.Namespace, client: Any = None
) -> Path:
    """Segment one TIFF or zarr input and write the result into ``outdir``."""
    from ..common.errors import UserInputError
    from ..inference.pipeline import run_with_progress, segment_iter

    image, file_axes = read_image(path)
    zarr_input = not _is_tiff(path)
    kind = "probabilities" if args.output == "probabilities" else "labels"
    target = outdir / f"{image_name(path)}_{kind}.{'zarr' if zarr_input else 'tif'}"
    axes = args.axes or file_axes
    if target.exists() and not args.overwrite:
        raise UserInputError(f"{target} exists; pass --overwrite to replace it")
    try:
        gen = segment_iter(
            image,
            model,
            axes=axes,
            output=args.output,
            tile_shape=args.tile,
            overlap=overlap_pixels(args.overlap, args.tile),
            batch_size=args.batch_size,
            device=args.device,
            min_size=args.min_size,
            out=target if zarr_input else None,
            scale=args.scale,
            diameter=args.diameter,
            client=client,
            engine=args.engine,
            **z_arguments(path, args),
        )
        result = run_with_progress(gen, progress=True)
    except UserInputError as err:
        raise UserInputError(f"{path}: {err}") from err
    if not zarr_input:
        write_tiff_atomic(target, result)
    return target


def z_arguments(path: Path, args: argparse.Namespace) -> dict[str, Any]:
    """``z_mode``, ``anisotropy`` (given, else from the file) and ``stitch_threshold``."""
    from .voxel_size import anisotropy_of

    anisotropy = args.anisotropy
    if anisotropy is None:
        anisotropy = anisotropy_of(path) or 1.0
        if anisotropy != 1.0:
            log.info("%s: anisotropy %.3g from the file's voxel size", path, anisotropy)
    found = {"z_mode": args.z_mode, "anisotropy": anisotropy}
    if args.stitch_threshold is not None:
        found["stitch_threshold"] = args.stitch_threshold
    return found


def write_tiff_atomic(path: Path, data) -> None:
    """Write a zlib-compressed TIFF through a temporary file, so no half-written file remains."""
    import tifffile

    from ..common.atomic import atomic_write

    with atomic_write(path) as tmp:
        tifffile.imwrite(tmp, data, compression="zlib")


def overlap_pixels(overlap: float | None, tile: int | None) -> int | None:
    """``--overlap`` in pixels: a value below 1 is a fraction of ``--tile``."""
    from ..common.errors import UserInputError

    if overlap is None:
        return None
    if overlap < 0:
        raise UserInputError(f"--overlap must be >= 0, got {overlap}")
    if overlap >= 1 or overlap == 0:
        return round(overlap)
    if tile is None:
        raise UserInputError("a fractional --overlap needs --tile (or give it in pixels)")
    return round(overlap * tile)


def image_name(path: Path) -> str:
    """The file name without its image suffixes: ``a.ome.tif`` -> ``a``, ``b.zarr`` -> ``b``."""
    name = path.name
    for suffix in (".ome.tiff", ".ome.tif", ".tiff", ".tif", ".ome.zarr", ".zarr"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def read_image(path: Path) -> tuple[Any, str | None]:
    """An image and its axes if the file records them (``None`` otherwise).

    TIFF files are read into memory; zarr arrays and OME-Zarr groups (level 0 of the first
    multiscale image) are opened lazily as dask arrays.
    """
    from ..common.errors import UserInputError

    if _is_tiff(path):
        return _read_tiff(path)
    if path.is_dir():
        return _read_zarr(path)
    raise UserInputError(f"{path}: not a TIFF file (.tif, .tiff) or a zarr / OME-Zarr folder")


def _is_tiff(path: Path) -> bool:
    return path.suffix.lower() in TIFF_SUFFIXES


def _read_tiff(path: Path) -> tuple[Any, str | None]:
    import tifffile

    from ..common.errors import UserInputError

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            image = series.asarray()
            axes = "".join(_TIFF_AXES.get(a, a) for a in series.axes.upper())
    except (tifffile.TiffFileError, OSError, ValueError, IndexError) as err:
        raise UserInputError(f"{path}: cannot read this TIFF file: {err}") from err
    if image.ndim == 2:
        return image, "YX"
    known = set(axes) <= set("TCZYX") and len(set(axes)) == len(axes) == image.ndim
    return image, axes if known else None


def _read_zarr(path: Path) -> tuple[Any, str | None]:
    import dask.array as da
    import zarr

    from ..common.errors import UserInputError

    try:
        node = zarr.open(str(path), mode="r")
    except Exception as err:  # zarr raises several unrelated types for a bad store
        raise UserInputError(f"{path}: cannot open as zarr: {err}") from err
    if isinstance(node, zarr.Array):
        return da.from_zarr(node), None
    attrs = dict(node.attrs)
    multiscales = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
    if not multiscales:
        raise UserInputError(f"{path}: a zarr group without OME-Zarr 'multiscales' metadata")
    first = multiscales[0]
    level0 = first["datasets"][0]["path"]
    names = [a["name"] if isinstance(a, dict) else a for a in first.get("axes", [])]
    axes = "".join(str(n).upper() for n in names) or None
    array = da.from_zarr(node[level0])
    if axes is not None and (len(axes) != array.ndim or not set(axes) <= set("TCZYX")):
        axes = None
    return array, axes
