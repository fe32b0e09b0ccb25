"""The Train widget's settings: architecture (with the live layer summary) and hyper-parameters.

The defaults are those of :class:`napari_unet.training.config.TrainConfig`: a depth-4,
base-16 U-Net on 128x128 patches, batch 8, AdamW at 1e-3 - good for 2D fluorescence nuclei on
a CPU. Starting from the built-in model switches to a fine-tune's settings
(:data:`FINE_TUNE_EPOCHS` epochs at :data:`FINE_TUNE_LR`), as Correct and retrain uses.
"""

from __future__ import annotations

from typing import Any

from magicgui.widgets import CheckBox, ComboBox, Container, FloatSpinBox, SpinBox, TextEdit

from ._network_summary import read_only_monospace, summary_text

_INT_MAX = 2**31 - 1

#: the "start from" choices: a new, randomly initialised network, or fine-tune a shipped model
START_NEW = "new network"
START_BUILTIN = "built-in nuclei model"
START_BUILTIN_HE = "built-in H&E model"
#: the built-in model each start fine-tunes
STARTS = {START_BUILTIN: "nuclei", START_BUILTIN_HE: "nuclei-he"}

#: learning rate of a fine-tune (AdamW): napari_unet.training.config.FINE_TUNE_LR, written out
#: here because that module imports torch (tests/test_train_lr.py checks they agree)
FINE_TUNE_LR = 1e-4
#: epochs of a fine-tune (Correct and retrain, the Train dock starting from the built-in model)
FINE_TUNE_EPOCHS = 10
#: Correct and retrain's recipe (issue 26, benchmarks/bench_correct_retrain.py): the decoder
#: alone learns, at 1e-3, for RETRAIN_EPOCHS x RETRAIN_STEPS batches of 8 patches; on held-out
#: images of new kinds this gained most per second of the recipes measured
RETRAIN_LR = 1e-3
RETRAIN_EPOCHS = 2
RETRAIN_STEPS = 10
RETRAIN_LAYERS = "decoder"
#: a new network's epochs and learning rate (TrainConfig's defaults)
NEW_EPOCHS, NEW_LR = 20, 1e-3


class ArchitectureBox(Container):
    """Dimensionality, task, depth, width, batch norm and the layer summary (+ ``start_from``).

    ``start_from`` is an attribute but not a row of this box: the Train dock shows it up front.

    Starting from a built-in model (nuclei, or H&E for stained slides) fine-tunes it: its
    architecture and task are shown and locked, and training normalises the images as the
    model was trained.
    """

    def __init__(self) -> None:
        self.start_from = ComboBox(
            choices=[START_NEW, START_BUILTIN, START_BUILTIN_HE],
            value=START_NEW,
            label="start from",
            tooltip="fine-tune a built-in model on your annotations (fewer epochs and "
            "annotations needed for nuclei-like objects): the nuclei model for grey "
            "fluorescence, the H&E model for stained colour slides (it learns their optical "
            "density, as Segment shows it); or train a new network",
        )
        self.dims = ComboBox(
            choices=["2D", "3D"], value="2D", label="network",
            tooltip="2D: one plane at a time; 3D: z-stacks as volumes",
        )  # fmt: skip
        self.task = ComboBox(
            choices=["instance", "semantic"],
            value="instance",
            label="task",
            tooltip="instance: touching objects separated (background/interior/boundary); "
            "semantic: one output class per label value",
        )
        self.depth = SpinBox(
            value=4, min=0, max=6, label="network depth",
            tooltip="number of down-sampling steps (poolings); deeper sees more context",
        )  # fmt: skip
        self.base_filters = SpinBox(
            value=16, min=1, max=256, label="network width",
            tooltip="filters of the first level (doubled at each level); wider learns more "
            "but is slower",
        )  # fmt: skip
        self.batch_norm = CheckBox(
            value=True, text="batch normalisation", tooltip="normalise layer outputs per batch"
        )
        self.summary = TextEdit(value="", label="layers")
        read_only_monospace(self.summary)
        # start_from is placed by the Train dock among the first settings
        super().__init__(
            widgets=[
                self.dims,
                self.task,
                self.depth,
                self.base_filters,
                self.batch_norm,
                self.summary,
            ]
        )

    @property
    def ndim(self) -> int:
        return 3 if self.dims.value == "3D" else 2

    @property
    def init(self) -> str | None:
        """The built-in model to start from (``"nuclei"``, ``"nuclei-he"``), or None for a new
        network."""
        return STARTS.get(self.start_from.value)

    def follow_start_from(self, *_: Any) -> None:
        """Show (and lock) the architecture of the model to start from; unlock for a new one."""
        import sys

        from ._network_summary import import_torch_then

        if self.init is None:
            self.lock_to(None)
            return
        if "torch" not in sys.modules:  # the model card reader imports torch: off the GUI thread
            import_torch_then(self.follow_start_from)
            return
        from ...model.files import builtin_model_path, read_card

        card = read_card(builtin_model_path(self.init))
        self.lock_to(card["architecture"], card.get("task"))

    def lock_to(self, architecture: dict[str, Any] | None, task: str | None = None) -> None:
        """Show a model's ``architecture`` (its card's) and lock it; ``None`` unlocks."""
        fixed = (self.dims, self.task, self.depth, self.base_filters, self.batch_norm)
        if architecture is not None:
            self.dims.value = f"{architecture['ndim']}D"
            self.task.value = task or self.task.value
            self.depth.value = architecture["depth"]
            self.base_filters.value = architecture["base_filters"]
            self.batch_norm.value = architecture["batch_norm"]
        for w in fixed:
            w.enabled = architecture is None

    def show_summary(self, patch: int, in_channels: int, num_classes: int) -> str:
        """Fill the summary table for a ``patch``-sized input; returns its text."""
        text = summary_text(
            ndim=self.ndim,
            depth=self.depth.value,
            base_filters=self.base_filters.value,
            batch_norm=self.batch_norm.value,
            patch=patch,
            in_channels=in_channels,
            num_classes=num_classes,
        )
        self.summary.value = text
        return text


class HyperParameters(Container):
    """Training hyper-parameters, the ignore label, device (+ ``epochs`` and ``preview``).

    ``epochs`` and ``preview`` are attributes but not rows of this box: the Train dock shows
    them up front.
    """

    def __init__(self) -> None:
        self.epochs = SpinBox(
            value=NEW_EPOCHS, min=1, max=100_000, label="epochs",
            tooltip="passes over the training data; more epochs learn more, and take longer",
        )  # fmt: skip
        self.steps = SpinBox(
            value=0, min=0, max=1_000_000, label="steps per epoch (0 = auto)",
            tooltip="batches per epoch; 0: from the data size",
        )  # fmt: skip
        self.batch_size = SpinBox(value=8, min=1, max=1024, label="batch size")
        self.patch = SpinBox(
            value=128, min=4, max=4096, step=16, label="patch size", tooltip="pixels per axis"
        )
        self.patch_depth = SpinBox(
            value=0, min=0, max=4096, label="patch depth, z (0 = patch size)",
            tooltip="3D networks: patch size along Z; anisotropic stacks (z step larger than "
            "the pixel size) train well on flat patches, e.g. 16 x 128 x 128",
        )  # fmt: skip
        self.learning_rate = FloatSpinBox(
            value=NEW_LR, min=1e-6, max=1.0, step=1e-4, label="learning rate"
        )
        self.learning_rate.native.setDecimals(6)
        self.val_fraction = FloatSpinBox(
            value=0.1,
            min=0.0,
            max=0.9,
            step=0.05,
            label="validation",
            tooltip="fraction of the pairs (slices) held out for validation; with one pair, "
            "validation uses the training image",
        )
        self.augment = CheckBox(value=True, text="augment (flips, rotations, elastic, intensity)")
        self.ignore_label = SpinBox(
            value=-1,
            min=-1,
            max=_INT_MAX,
            label="unannotated label (-1 = none)",
            tooltip="label value of pixels that were not annotated (they are not learnt from); "
            "-1: every pixel is annotated",
        )
        self.seed = SpinBox(value=0, min=0, max=_INT_MAX, label="seed")
        self.device = ComboBox(choices=["auto", "cpu", "cuda", "mps"], value="auto", label="device")
        self.preview = CheckBox(
            value=False,
            text="preview the visible slice",
            tooltip="predict the slice shown in the viewer with the best model so far, into "
            "the layer '<image> preview'",
        )
        self.preview_every = SpinBox(value=2, min=1, max=10_000, label="preview every (epochs)")
        # epochs and preview are placed by the Train dock among the first settings
        super().__init__(
            widgets=[
                self.steps,
                self.batch_size,
                self.patch,
                self.patch_depth,
                self.learning_rate,
                self.val_fraction,
                self.augment,
                self.ignore_label,
                self.seed,
                self.device,
                self.preview_every,
            ]
        )

    @property
    def ignore(self) -> int | None:
        return None if self.ignore_label.value < 0 else int(self.ignore_label.value)

    def suit(self, fine_tune: bool) -> None:
        """Epochs and learning rate of a fine-tune (or of a new network); a value the user
        changed from the other preset is kept."""
        (epochs, rate), (old_epochs, old_rate) = (
            ((FINE_TUNE_EPOCHS, FINE_TUNE_LR), (NEW_EPOCHS, NEW_LR))
            if fine_tune
            else ((NEW_EPOCHS, NEW_LR), (FINE_TUNE_EPOCHS, FINE_TUNE_LR))
        )
        if self.epochs.value == old_epochs:
            self.epochs.value = epochs
        if abs(self.learning_rate.value - old_rate) < 1e-9:
            self.learning_rate.value = rate


def make_config(arch: ArchitectureBox, hyper: HyperParameters) -> Any:
    """The :class:`TrainConfig` of the widgets' values (raises UserInputError if invalid)."""
    from ...training.augment import AugmentConfig
    from ...training.config import TrainConfig

    return TrainConfig(
        task=arch.task.value,
        ndim=arch.ndim,
        depth=arch.depth.value,
        base_filters=arch.base_filters.value,
        batch_norm=arch.batch_norm.value,
        epochs=hyper.epochs.value,
        steps_per_epoch=hyper.steps.value or None,
        batch_size=hyper.batch_size.value,
        patch_size=patch_size(arch.ndim, hyper.patch.value, hyper.patch_depth.value),
        learning_rate=float(hyper.learning_rate.value),
        val_fraction=float(hyper.val_fraction.value),
        augment=AugmentConfig() if hyper.augment.value else AugmentConfig.none(),
        seed=hyper.seed.value,
        device=hyper.device.value,
    )


def patch_size(ndim: int, patch: int, depth: int) -> int | tuple[int, ...]:
    """The training patch: ``patch`` per axis, or ``(depth, patch, patch)`` for 3D with a depth."""
    return (depth, patch, patch) if ndim == 3 and depth else patch
