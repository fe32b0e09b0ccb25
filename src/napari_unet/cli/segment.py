"""``napari-unet segment INPUT... -o OUTDIR``: segment TIFF, PNG/JPEG, .npy and zarr images.

One line per image on stderr says what was decided and found: the objects, their size and the
scale, the channel, colour handling, inversion and model, an out-of-domain warning where the
image looks unlike the model's training images, and the time. A folder batch reports a file
that fails, goes on with the others, and exits 2 at the end with a summary.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import time
from pathlib import Path
from typing import Any

from ._args import non_negative, non_negative_int, positive, positive_int, probability

#: napari_unet.inference.backends.engines.ENGINES (not imported here: it would import torch)
ENGINES = ("auto", "torch", "openvino", "onnxruntime", "openvino-int8")
log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "segment",
        help="segment images with a U-Net model",
        description="Segment TIFF (OME-TIFF, ImageJ), PNG, JPEG, .npy or zarr / OME-Zarr images, "
        "grey, multichannel or colour (H&E). Writes <name>_labels.tif per file input "
        "(<name>_labels.zarr per zarr input) into OUTDIR, or <name>_probabilities.* with "
        "--output probabilities, and with --table <name>_objects.csv (one row per object). "
        "Prints one line per image; a failing file in a batch is reported and skipped, and "
        "the run exits 2 at the end.",
    )
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="image files (.tif/.tiff/.ome.tif, .png, .jpg/.jpeg, .npy), zarr / OME-Zarr "
        "folders, or folders of such images",
    )
    p.add_argument(
        "-o", "--outdir", required=True, metavar="OUTDIR", help="output folder (created)"
    )
    p.add_argument(
        "--model",
        metavar="PATH",
        help="a .safetensors model file, a BioImage.IO package (.zip or folder with "
        "rdf.yaml) or a built-in name (nuclei, nuclei-he); default: the built-in model for "
        "the image's kind (nuclei-he for H&E and other stained colour images, else nuclei)",
    )
    p.add_argument(
        "--channel",
        metavar="N|NAME",
        help="the channel to segment in a multichannel image: 0-based index on the channel "
        "axis, or a channel name from the file's metadata (default: a channel named for a "
        "nuclear stain such as DAPI; otherwise a multichannel image is refused with its "
        "channels listed)",
    )
    p.add_argument(
        "--tta",
        action="store_true",
        help="test-time augmentation: average the probabilities over flips and 90-degree "
        "rotations (8 forward passes per tile)",
    )
    p.add_argument(
        "--invert",
        choices=("auto", "yes", "no"),
        default="auto",
        help="invert the image for the model (dark nuclei on a bright background, e.g. "
        "brightfield); auto (default): when the background is brighter than the objects",
    )
    p.add_argument(
        "--axes",
        metavar="AXES",
        help="axes of the inputs, e.g. YX, ZYX, YXC, TCYX (default: from the file, else guessed)",
    )
    p.add_argument(
        "--tile",
        type=positive_int,
        metavar="N",
        help="tile size in pixels (default: from the model)",
    )
    p.add_argument(
        "--overlap",
        type=non_negative,
        metavar="F",
        help="tile overlap: pixels (>= 1), or a fraction of --tile (< 1); "
        "default: from the model's receptive field",
    )
    p.add_argument("--batch-size", type=positive_int, metavar="B", help="tiles per batch")
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
        type=non_negative_int,
        default=None,
        metavar="PX",
        help="smallest object kept, in pixels (instance output; default: the model card's, else 10)",
    )
    p.add_argument(
        "--seed-threshold",
        type=probability,
        default=None,
        metavar="P",
        help="interior probability that starts an object (instance output; default: the model "
        "card's); lower finds more faint nuclei",
    )
    p.add_argument(
        "--foreground-threshold",
        type=probability,
        default=None,
        metavar="P",
        help="object probability a pixel needs to belong to a mask (instance output; default: "
        "the model card's); lower draws wider masks, e.g. 0.2 where the annotations include "
        "each nucleus's dim halo",
    )
    size = p.add_mutually_exclusive_group()
    size.add_argument(
        "--scale",
        type=positive,
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
        "--block",
        type=positive_int,
        nargs=3,
        default=None,
        metavar=("Z", "Y", "X"),
        help="--z-mode 3d on zarr input (its default there) runs block by block, objects joined "
        "across blocks, memory bounded by a block: its size in voxels (default: from the "
        "chunks and the free memory); with a TIFF, segment it block by block too. A stopped zarr "
        "run keeps its finished blocks beside the output, and the same command resumes it",
    )
    p.add_argument(
        "--table",
        action="store_true",
        help="also write <name>_objects.csv beside the labels: one row per object with "
        "label, area, centroid_y, centroid_x (centroid_z before them for 3D; t for time "
        "series), mean_intensity and the model's confidence (0-1: correct the least "
        "confident objects first); instance output of file inputs (not zarr)",
    )
    existing = p.add_mutually_exclusive_group()
    existing.add_argument(
        "--overwrite", action="store_true", help="replace output files that already exist"
    )
    existing.add_argument(
        "--skip-existing",
        action="store_true",
        help="leave images whose output exists alone (resume a batch)",
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
        float(word)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number of pixels, 'auto' or 'none', got {text!r}"
        ) from None
    return positive(word)


def run(args: argparse.Namespace) -> int:
    from ..common.outputs import check_output_dir
    from ..common.readers import expand_inputs

    inputs = expand_inputs(args.inputs, "INPUT")  # before loading the model: seconds, not minutes
    _check_outdir_outside_stores(Path(args.outdir), inputs)
    outdir = check_output_dir(args.outdir, "-o/--outdir")  # removed by a failed run if empty
    inputs = _without_earlier_results(inputs, outdir, args)
    report_log = logging.getLogger("napari_unet.report")
    level = report_log.level
    if not getattr(args, "verbose", False):  # each image's line carries its warning once
        report_log.setLevel(logging.ERROR)
    try:
        return _run(args, inputs, outdir)
    finally:
        report_log.setLevel(level)


def _run(args: argparse.Namespace, inputs: list[Path], outdir: Path) -> int:
    from ..common.errors import UserInputError
    from ..common.outputs import check_output_target

    if args.table and args.output in ("semantic", "probabilities"):
        raise UserInputError(f"--table needs instance labels, not --output {args.output}")
    targets = [output_path(path, outdir, args) for path in inputs]
    seen: dict[Path, Path] = {}
    todo: list[tuple[Path, Path]] = []
    for path, target in zip(inputs, targets):
        if target in seen:
            raise UserInputError(
                f"{seen[target]} and {path} would both be written to {target}; "
                "segment them into different -o folders"
            )
        seen[target] = path
        with_table = args.table and target.suffix != ".zarr"  # in-memory images only
        outputs = [target, *([table_path(target)] if with_table else [])]
        if args.skip_existing and all(out.exists() for out in outputs):
            names = " and ".join(out.name for out in outputs)
            print(
                f"{_printable(path.name)}: skipped, {names} exist(s) (--skip-existing)",
                file=sys.stderr,
            )
            continue
        for out in outputs:  # --skip-existing with only some of them: refused as without it
            check_output_target(out, "-o/--outdir", overwrite=args.overwrite)
        todo.append((path, target))
    overlap_pixels(args.overlap, args.tile)
    model = _model(args.model)
    failed: list[tuple[Path, str]] = []
    with _cluster(args.scheduler) as client:
        for path, target in todo:
            try:
                written = segment_file(path, target, model, args, client)
            except (UserInputError, OSError, MemoryError) as err:
                if len(todo) == 1:
                    raise
                failed.append((path, _reason(err)))
                print(f"{_printable(path.name)}: failed: {failed[-1][1]}", file=sys.stderr)
                continue
            log.info("%s -> %s", path, written)
            print(written)
    if failed:
        names = ", ".join(f"{p.name} ({why})" for p, why in failed)
        raise UserInputError(
            f"{len(todo) - len(failed)} written, {len(failed)} failed: {names}; "
            "fix those files and rerun with --skip-existing"
        )
    return 0


def _model(name: str | None):
    """The model of ``--model``: None (a built-in model by the image's kind) or loaded once."""
    from ..common.errors import UserInputError
    from ..zoo.resolve import resolve_model

    if name is None:  # checked here, so a missing installation fails before any work
        try:
            resolve_model(None)
        except UserInputError as err:
            raise UserInputError(f"{err} (no built-in model: pass one with --model PATH)") from err
        return None
    return resolve_model(name)


def _reason(err: BaseException) -> str:
    from ..common.errors import describe_os_error

    if isinstance(err, OSError):
        return describe_os_error(err)
    if isinstance(err, MemoryError):
        return "not enough memory"
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def _cluster(scheduler: str | None):
    """A checked dask.distributed client for ``--scheduler`` (or the environment), or None."""
    import sys

    from ..inference.clusters.cluster import cluster_client, scheduler_address

    address = scheduler_address(scheduler)
    if address is None:
        return contextlib.nullcontext(None)
    print(f"computing on the dask cluster at {address}", file=sys.stderr)
    return cluster_client(address)


def _check_outdir_outside_stores(outdir: Path, inputs: list[Path]) -> None:
    """Refuse an output folder inside an input zarr store (it would write into the input)."""
    from ..common.errors import UserInputError

    where = outdir.resolve()
    for path in inputs:
        if path.is_dir() and (where == path.resolve() or path.resolve() in where.parents):
            raise UserInputError(
                f"-o/--outdir {outdir} is inside the input store {path}: the results would be "
                "written into the input; choose a folder outside it"
            )


def _without_earlier_results(inputs: list[Path], outdir: Path, args) -> list[Path]:
    """The inputs less this command's own results, where a folder input is also ``outdir``:
    a rerun would otherwise segment ``a_labels.tif`` into ``a_labels_labels.tif``."""
    here = outdir.resolve()
    if here not in {Path(p).resolve() for p in args.inputs if Path(p).is_dir()}:
        return inputs
    ours = ("_labels.", "_probabilities.")
    kept = [p for p in inputs
            if not (p.parent.resolve() == here and any(tag in p.name for tag in ours))]  # fmt: skip
    if not kept:
        from ..common.errors import UserInputError

        raise UserInputError(
            f"{outdir} holds only earlier results (*_labels.*, *_probabilities.*) to segment; "
            "give the folder of the images"
        )
    if len(kept) < len(inputs):
        print(
            f"{outdir}: left out {len(inputs) - len(kept)} earlier result(s) (*_labels.*, "
            "*_probabilities.*): the output folder is also an input folder",
            file=sys.stderr,
        )
    return kept


def output_path(path: Path, outdir: Path, args: argparse.Namespace) -> Path:
    """Where the result of one input goes: ``<name>_labels.tif`` (``.zarr`` for zarr input)."""
    from ..common.readers import image_name

    kind = "probabilities" if args.output == "probabilities" else "labels"
    suffix = "zarr" if path.is_dir() else "tif"  # zarr in, zarr out (written chunk by chunk)
    return outdir / f"{image_name(path)}_{kind}.{suffix}"


def table_path(target: Path) -> Path:
    """Where ``--table`` writes the objects of the labels ``target``: ``<name>_objects.csv``."""
    name = target.name.rsplit("_labels.", 1)[0]
    return target.with_name(f"{name}_objects.csv")


def _threshold_overrides(args: argparse.Namespace) -> dict[str, float] | None:
    """``--seed-threshold`` / ``--foreground-threshold`` as ``segment(postprocessing=)``."""
    given = {
        "seed_threshold": args.seed_threshold,
        "foreground_threshold": args.foreground_threshold,
    }
    return {key: value for key, value in given.items() if value is not None} or None


def segment_file(
    path: Path, target: Path, model, args: argparse.Namespace, client: Any = None
) -> Path:
    """Segment one image file or zarr store and write the result to ``target``."""
    from ..common.errors import UserInputError
    from ..common.progress import relay
    from ..common.readers import channel_names, read_image
    from ..inference.pipeline import run_with_progress, segment_iter

    image, file_axes = read_image(path)
    zargs, source = z_arguments(path, args)
    zarr_output = target.suffix == ".zarr"
    axes = args.axes or file_axes
    started = time.perf_counter()
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
            postprocessing=_threshold_overrides(args),
            out=target if zarr_output else None,
            scale=args.scale,
            diameter=args.diameter,
            client=client,
            engine=args.engine,
            channel=args.channel,
            channel_names=channel_names(path),
            invert=args.invert,
            tta=args.tta,
            axes_source=None if args.axes else "file",
            table=args.table,
            **zargs,
        )
        events: list = []
        result = run_with_progress(relay(gen, _remember(events)), progress=True)
    except UserInputError as err:
        raise UserInputError(f"{path}: {err}") from err
    if not zarr_output:
        write_tiff_atomic(target, result)
    note = ""
    if args.table:
        note = _write_table(events[-1].table if events else None, table_path(target))
    if events:  # once written: a failed write leaves its one-line error alone on stderr
        seconds = time.perf_counter() - started
        line = describe_run(events[-1], args.diameter, seconds, {**zargs, "source": source})
        print(f"{_printable(path.name)}: {line}{note}", file=sys.stderr)
    return target


def _printable(name: str) -> str:
    """A file name for one line of output: quoted when it holds a newline or another control
    character (which would split or garble the line)."""
    return repr(name) if any(ord(c) < 32 or ord(c) == 127 for c in name) else name


def _write_table(table: dict | None, path: Path) -> str:
    """Write the objects' table to ``path``; what the image's line says about it."""
    from ..inference.labels.objects import write_csv

    if table is None:  # the engine measures in-memory instance labels only
        return "; no object table (zarr input or semantic model)"
    write_csv(table, path)
    return f"; objects in {path.name}"


def z_arguments(path: Path, args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    """``z_mode``, ``anisotropy`` (given, else from the file), ``stitch_threshold``, ``block``
    as ``segment`` takes them, and where the anisotropy came from (``"given"``, ``"from the
    file"`` or ``"default"``)."""
    from ..common.errors import UserInputError
    from ..inference.volumes.zstack import MAX_ANISOTROPY, MIN_ANISOTROPY
    from .voxel_size import anisotropy_of

    anisotropy, source = args.anisotropy, "given"
    if anisotropy is None:
        found_in_file = anisotropy_of(path)
        anisotropy = found_in_file or 1.0
        source = "default" if found_in_file is None else "from the file"
        if not MIN_ANISOTROPY <= anisotropy <= MAX_ANISOTROPY:
            raise UserInputError(
                f"its voxel size gives an anisotropy (z step / XY pixel size) of "
                f"{anisotropy:g}, outside [{MIN_ANISOTROPY:g}, {MAX_ANISOTROPY:g}]: the metadata "
                "looks wrong; pass the real value with --anisotropy F"
            )
        if anisotropy != 1.0:
            log.info("%s: anisotropy %.3g from the file's voxel size", path, anisotropy)
    found = {"z_mode": args.z_mode, "anisotropy": anisotropy}
    if args.stitch_threshold is not None:
        found["stitch_threshold"] = args.stitch_threshold
    if getattr(args, "block", None) is not None:
        found["block"] = tuple(args.block)
    return found, source


def _remember(events: list):
    """An event translation for :func:`relay` that keeps the last event in ``events``."""

    def keep(event):
        events[:] = [event]
        return event

    return keep


def describe_size(event, diameter) -> str:
    """The object size and resampling of one run, from its last progress event."""
    how = "measured" if diameter == "auto" else "given"
    if event.diameter is None:
        size = "object size not measured" if diameter == "auto" else "object size not given"
    else:
        size = f"objects ~{event.diameter:.1f} px ({how})"
    return f"{size}, scale {event.scale:.3f}"


def describe_run(event, diameter, seconds: float, z: dict | None = None) -> str:
    """One image's line: objects, size and scale, what was decided, a warning, the time.

    ``z``: the z-stack settings of :func:`z_arguments`; a stack's line states its anisotropy.
    """
    report = event.report
    parts = []
    if report is not None and report.objects is not None:
        parts.append(f"{report.objects} objects")
    parts.append(describe_size(event, diameter))
    if report is not None:
        parts.append(report.choice.describe())
        if z is not None and "Z" in report.choice.axes:
            mode = f"z-mode {z['z_mode']}, " if z.get("z_mode") else ""
            parts.append(f"{mode}anisotropy {z['anisotropy']:g} ({z['source']})")
    parts.append(f"{seconds:.1f} s")
    line = ", ".join(parts)
    if report is not None and report.warning:
        line += f"; WARNING {report.warning}"
    return line


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
