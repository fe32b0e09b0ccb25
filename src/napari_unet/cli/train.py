"""``napari-unet train``: train a U-Net on folders of TIFF images and labels."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from ._train_args import add_arguments
from ._train_checks import check_processes, check_train_outputs

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a U-Net on folders of images and labels",
        description="Train a U-Net. Images and labels are TIFF files matched by file name "
        "(a '_labels' suffix on label files is accepted). Writes a .safetensors model file "
        "whose card holds the final validation metrics and the provenance.",
    )
    add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Train; with ``--nproc N`` launch N data-parallel processes (torchrun) that do."""
    from ..training.ddp import launched_by_torchrun

    if not launched_by_torchrun():
        if args.nproc > 1:
            check_processes(args)  # here, before torchrun starts anything
            check_train_outputs(args)
            return _launch(args)
        return _train(args)
    try:
        if int(os.environ.get("RANK", "0")) == 0:
            return _train(args)
        return _train_silently(args)
    finally:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def _train_silently(args: argparse.Namespace) -> int:
    """A rank other than 0: trains without output and writes nothing.

    An error in the input, or Ctrl-C, is the same on every rank: rank 0 says it, this one
    only exits (2, 130). Other errors (and warnings) still show.
    """
    from ..common.errors import UserInputError
    from ._errors import EXIT_INTERRUPTED, EXIT_USAGE

    try:
        with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
            with contextlib.redirect_stderr(null):
                return _train(args, main_rank=False)
    except UserInputError:
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _launch(args: argparse.Namespace) -> int:
    """Run this command again under torchrun in ``--nproc`` processes; their exit code."""
    import subprocess

    argv = list(getattr(args, "argv", None) or sys.argv[1:])
    for i, word in enumerate(argv):  # drop --nproc N / --nproc=N
        if word == "--nproc":
            del argv[i : i + 2]
            break
        if word.startswith("--nproc="):
            del argv[i]
            break
    torchrun = ["--standalone", f"--nproc-per-node={args.nproc}", "-m", "napari_unet", *argv]
    print(
        f"launching {args.nproc} training processes: torchrun {' '.join(torchrun)}",
        file=sys.stderr,
    )
    # torchrun, less its traceback when a rank fails (that rank has said why, in one line)
    code = "import sys; from napari_unet.training.ddp import torchrun; sys.exit(torchrun(sys.argv[1:]))"
    process = subprocess.Popen([sys.executable, "-c", code, *torchrun])
    # Ctrl-C reaches the training processes directly (same terminal): they stop after the
    # current batch and save; this process waits for them instead of dying first
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return process.wait()
    finally:
        signal.signal(signal.SIGINT, previous)


def _keep_learnt_augmentation(config, args: argparse.Namespace, card: dict):
    """``config`` with the stain mixing and blur the ``--init`` model learnt with, where
    ``--stain-jitter`` / ``--blur`` were not given; says so when they are not 0."""
    from dataclasses import replace

    from ..training.augment import learnt_with

    if args.no_augment:
        return config
    flags = {"stain": ("--stain-jitter", args.stain_jitter), "blur": ("--blur", args.blur)}
    kept = {
        key: value
        for key, value in learnt_with(card).items()
        if flags[key][1] is None and value > 0
    }
    if not kept:
        return config
    said = " and ".join(f"{flags[key][0]} {value:g}" for key, value in kept.items())
    print(f"augmentation: {said}, as {card.get('name') or args.init} learnt with", file=sys.stderr)
    return replace(config, augment=replace(config.augment, **kept))


def _train(args: argparse.Namespace, main_rank: bool = True) -> int:
    import torch
    from tqdm import tqdm

    from ..common.device import resolve_device
    from ..model.files import save_model
    from ..training.arrays import prepare_data, segment_view
    from ..training.augment import AugmentConfig
    from ..training.config import FINE_TUNE_LR, TrainConfig, config_for_model
    from ..training.data.batches import default_workers
    from ..training.data.pairs import read_folder_pairs
    from ..training.events import BatchEnd, CheckpointSaved, EpochEnd
    from ..training.finishing.tune import TunedPostprocessing, TuneProgress
    from ..training.loop import train_iter

    checkpoint = check_train_outputs(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    workers = default_workers(resolve_device(args.device), args.workers)  # checked before the data
    config = TrainConfig(
        task=args.task,
        ndim=args.ndim or labels_ndim(args.images, args.labels),
        depth=args.depth,
        base_filters=args.base_filters,
        epochs=args.epochs,
        steps_per_epoch=args.steps_per_epoch,
        batch_size=args.batch,
        patch_size=args.patch[0] if len(args.patch) == 1 else tuple(args.patch),
        learning_rate=args.lr or (FINE_TUNE_LR if args.init is not None else 1e-3),
        val_fraction=args.val_fraction,
        augment=AugmentConfig.none()
        if args.no_augment
        else AugmentConfig(
            zoom=tuple(args.zoom), stain=args.stain_jitter or 0.0, blur=args.blur or 0.0
        ),
        seed=args.seed,
        device=args.device,
        contact_weight=not args.no_contact_weight,
        w0=args.w0,
        tune_postprocessing=not args.no_tune,
        batch_norm=not args.no_batch_norm,
        object_diameter=_object_diameter(args.object_diameter),
        freeze_norm_statistics=False if args.update_norm_statistics else None,
    )
    model = None
    if args.init is not None:
        model = _init_model(args.init)
        config = config_for_model(config, model)
        print(f"starting from {args.init} ({model.card.get('name')})", file=sys.stderr)
        config = _keep_learnt_augmentation(config, args, model.card)
    triples = read_folder_pairs(args.images, args.labels)
    if not args.quiet:
        print(f"preparing {len(triples)} training pairs ...", file=sys.stderr)
    images, labels, names = _unzip(triples)
    images, said = segment_view(images, config, model)
    if said:
        print(f"training images {said}", file=sys.stderr)
    pairs = prepare_data(images, labels, config, names=names, ignore_label=args.ignore_label)
    val = None
    if args.val_images is not None:
        vt = read_folder_pairs(args.val_images, args.val_labels)
        vi, vl, vn = _unzip(vt)
        vi, said = segment_view(vi, config, model)
        if said:
            print(f"validation images {said}", file=sys.stderr)
        val = prepare_data(vi, vl, config, names=vn, ignore_label=args.ignore_label)
    stop = threading.Event()
    gen = train_iter(
        pairs,
        val,
        config,
        model=model,
        checkpoint=checkpoint,
        resume=args.resume,
        stop=stop,
        workers=workers,
    )
    bar = None
    with _graceful_stop(stop, checkpoint):
        while True:
            try:
                event = next(gen)
            except StopIteration as done:
                result = done.value
                break
            if isinstance(event, BatchEnd):
                if bar is None:
                    bar = tqdm(
                        total=event.steps,
                        desc=f"epoch {event.epoch + 1}/{config.epochs}",
                        file=sys.stderr,
                        disable=args.quiet,
                        initial=event.step,
                    )
                bar.update(1)
                bar.set_postfix(loss=f"{event.loss:.4f}")
            elif isinstance(event, EpochEnd):
                if bar is not None:
                    bar.close()
                    bar = None
                print(
                    f"epoch {event.epoch + 1}/{event.epochs}: train loss {event.train_loss:.4f}  "
                    f"val loss {event.val_loss:.4f}  val Dice {event.val_dice:.4f}"
                    f"{'  (best)' if event.is_best else ''}  [{event.seconds:.0f} s]",
                    file=sys.stderr,
                )
            elif isinstance(event, CheckpointSaved):
                log.info("checkpoint saved: %s", event.path)
            elif isinstance(event, TuneProgress):
                if bar is None:
                    bar = tqdm(
                        total=event.total,
                        desc="tuning post-processing",
                        file=sys.stderr,
                        disable=args.quiet,
                    )
                bar.update(event.done - bar.n)
            elif isinstance(event, TunedPostprocessing):
                if bar is not None:
                    bar.close()
                    bar = None
                print(
                    f"post-processing chosen on {event.n_images} validation image(s) "
                    f"[{event.seconds:.0f} s]: {_settings(event.settings)}",
                    file=sys.stderr,
                )
    if bar is not None:
        bar.close()
    if result.stopped:
        print(f"stopped early; continue with --resume {checkpoint}", file=sys.stderr)
    if not main_rank:  # rank 0 writes the model
        return 0
    card = {"name": args.name or args.output.stem, "description": args.description}
    save_model(result.model, args.output, half=args.half, **card)
    metrics = result.model.card["metrics"]
    dice = metrics["val_dice"]
    score = (
        f"best epoch {result.best_epoch + 1}, validation Dice {dice:.4f}"
        if dice is not None
        else "no epoch completed"
    )
    if metrics.get("val_ap50") is not None:
        score += f", AP@0.5 {metrics['val_ap50']:.4f}, mean AP {metrics['val_mean_ap']:.4f}"
    size = result.model.card.get("object_diameter")
    if size:
        score += f"; objects worked at {size:g} px across"
    print(f"saved {args.output} ({score})")
    return 0


@contextlib.contextmanager
def _graceful_stop(stop: threading.Event, checkpoint: Path):
    """First Ctrl-C (or SIGTERM) stops after the current batch and keeps the best model.

    A second one aborts (exit 130, no model file written) wherever the run is, the end-of-run
    tuning and size fit included. (Ranks under torchrun get each Ctrl-C once: they run in
    sessions of their own, and torchrun passes it on; see ``training.ddp.torchrun``.)
    """
    stopping = []

    def handler(signum, frame):
        if stopping:
            raise KeyboardInterrupt
        stopping.append(signum)
        stop.set()
        print(
            f"\nstopping after this batch (checkpoint: {checkpoint}); press Ctrl-C again to abort",
            file=sys.stderr,
            flush=True,
        )

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    except Exception as err:
        from ..training.ddp import is_peer_lost

        # after a Ctrl-C, another rank that the second one aborted first drops its connection
        # while this one waits on it: the same abort, not a failure
        if stopping and is_peer_lost(err):
            raise KeyboardInterrupt from err
        raise
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _init_model(source: str):
    """The U-Net to fine-tune: a model file, a built-in name, or napari-unet's own package."""
    from ..model.files import load_model
    from ..zoo.package import is_package

    if is_package(source):  # checked, then its U-Net (a foreign network is explained)
        from ..zoo.resolve import trainable_model

        return trainable_model(source)
    return load_model(source, device="cpu")


def _object_diameter(value: str) -> float | str | None:
    from ..common.errors import UserInputError

    if value.lower() in ("auto", "none"):
        return None if value.lower() == "none" else "auto"
    try:
        return float(value)
    except ValueError:
        raise UserInputError(
            f"--object-diameter must be a number of pixels, auto or none, got {value!r}"
        ) from None


def _settings(settings: dict) -> str:
    return ", ".join(f"{k} {v:g}" for k, v in settings.items())


def labels_ndim(images_dir, labels_dir) -> int:
    """3 when the first label file is a Z stack (3 axes), else 2."""
    import tifffile

    from ..training.data.pairs import match_folder_pairs

    pairs = match_folder_pairs(images_dir, labels_dir)
    with tifffile.TiffFile(pairs[0][1]) as tif:
        shape = tif.series[0].shape
    if len(shape) == 3:
        print(f"the labels are Z stacks {tuple(shape)}: training a 3D network", file=sys.stderr)
        return 3
    return 2


def _unzip(triples):
    images, labels, names = zip(*triples)
    return list(images), list(labels), list(names)
