"""Inference engines: torch, or a faster runtime for the same network on the CPU.

An engine turns a batch of tiles ``(B, C, *tile)`` into class probabilities ``(B, K, *out)``.
``"torch"`` runs the inference copy of the model (:mod:`napari_unet.model.inference`);
``"openvino"`` and ``"onnxruntime"`` run its ONNX export (:mod:`napari_unet.model.export`),
which is written once per model into a cache folder, keyed by the model's digest (its
weights), and reused by later runs. Install them with ``pip install "napari-unet[fast]"``.

Every engine other than torch is *verified* for a model before first use: a test input goes
through both, and the engine is used only if its probabilities equal torch's within
:data:`TOLERANCE`. ``"auto"`` picks the fastest installed engine that passes (OpenVINO, then
ONNX Runtime, then torch), on the CPU, for images of at least :data:`AUTO_MIN_PIXELS` pixels
or models already exported; smaller jobs run in torch rather than wait for an export.

``"openvino-int8"`` runs an int8 copy (:mod:`.quantize`): about 2x faster than OpenVINO in
float32, but its probabilities differ from torch's by ~1e-3 on average, so ``"auto"`` uses it
only for the models listed in :data:`INT8_VERIFIED`, whose segmentation scores were measured
to hold in int8 (the built-in nuclei model), and only for jobs of at least
:data:`AUTO_MIN_PIXELS` pixels (smaller images get torch's results).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ...common.errors import UserInputError
from ...model.export import export_onnx, model_digest
from ...model.inference import inference_model, parameter_version, to_model_layout
from ...model.unet import UNet
from .interrupt import onnxruntime_run, openvino_infer, torch_forward

__all__ = [
    "AUTO_MIN_PIXELS",
    "ENGINES",
    "TOLERANCE",
    "available_engines",
    "cache_dir",
    "engine_runner",
    "is_prepared",
    "resolve_engine",
]

log = logging.getLogger(__name__)

ENGINES = ("auto", "torch", "openvino", "onnxruntime", "openvino-int8")
#: the faster engines that "auto" may pick, fastest first (measured on a 2-core AVX-512 CPU:
#: benchmarks/README.md); "openvino-int8" only runs on request (its results differ more)
FAST = ("openvino", "onnxruntime")
_MODULES = {
    "openvino": ("openvino",),
    "onnxruntime": ("onnxruntime",),
    "openvino-int8": ("openvino", "onnxruntime"),  # quantized by ONNX Runtime's tools
}
#: largest difference in probabilities from torch's for an engine to be used
TOLERANCE = 1e-4
#: largest mean difference in probabilities from torch's for the int8 engine (a sanity check:
#: its quality is judged by the segmentation scores)
INT8_TOLERANCE = 1e-2
#: models (by :func:`model_digest`) whose int8 copy keeps their segmentation scores: "auto" runs
#: them with "openvino-int8". Measured with ``ENGINE=openvino-int8 bash
#: scripts/score_builtin_model.sh`` on the 49 DSB 2018 stage-1 test fluorescence images
#: (retraining the built-in model changes its digest and voids the entry).
INT8_VERIFIED = {
    # the built-in nuclei model: pixel Dice 0.905, AP@0.5 0.802, mean AP 0.562 in int8
    # (torch: 0.904, 0.800, 0.558)
    "c4ea9baeb20b12d15299d0c50c790196666416f685c0ab328663cbb0213cf754": "nuclei",
}
#: "auto" exports a model for a faster engine only for jobs of at least this many pixels
AUTO_MIN_PIXELS = 1024 * 1024
#: tile shapes compiled per OpenVINO model (one per tile plan in use)
_OV_SHAPES = 4

#: ``run(x, stop=None)``: a batch ``(B, C, *tile)`` to probabilities ``(B, K, *out)``, or
#: ``None`` when the event ``stop`` was set during the batch (:mod:`.interrupt`)
Runner = Callable[..., np.ndarray | None]
_RUNNERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_DIGESTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def available_engines() -> list[str]:
    """The engines installed here: ``"torch"`` and those whose packages are installed."""
    found = {m for mods in _MODULES.values() for m in mods if importlib.util.find_spec(m)}
    return ["torch", *(name for name, mods in _MODULES.items() if set(mods) <= found)]


def cache_dir() -> Path:
    """Where exported models are kept: ``$NAPARI_UNET_CACHE`` or the user cache folder."""
    root = os.environ.get("NAPARI_UNET_CACHE")
    if root:
        return Path(root) / "engines"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "napari-unet" / "engines"


def resolve_engine(
    engine: str | None, model: UNet, device: torch.device, pixels: int | None = None
) -> str:
    """The engine that runs ``model`` on ``device``: ``engine``, or the choice of ``"auto"``.

    Parameters
    ----------
    engine : {"auto", "torch", "openvino", "onnxruntime"} or None (= "auto")
    model : UNet
    device : torch.device
        The resolved compute device; engines other than torch run on the CPU only.
    pixels : int, optional
        Pixels (voxels) of the job; ``"auto"`` uses torch for jobs smaller than
        :data:`AUTO_MIN_PIXELS` unless the model is already loaded for it in this process.

    Raises
    ------
    UserInputError
        An unknown or uninstalled engine, or a CPU engine asked for on another device.
    """
    name = (engine or "auto").lower()
    if name not in ENGINES:
        raise UserInputError(f"engine must be one of {ENGINES}, got {engine!r}")
    installed = available_engines()
    if name == "auto":
        if device.type != "cpu":
            return "torch"
        for candidate in (*_int8_if_verified(model), *FAST):
            if candidate not in installed:
                continue
            big = pixels is None or pixels >= AUTO_MIN_PIXELS
            # small jobs: a float engine once prepared (equal to torch), never int8
            # a small image: a fast engine only when already loaded (loading an export from
            # disk and verifying it took 1.3-2.4 s, more than torch needs for 0.09 MPix)
            if big or (not candidate.endswith("int8") and is_loaded(model, candidate)):
                return candidate
        return "torch"
    if name not in installed:
        raise UserInputError(
            f"engine {name!r} is not installed; install it with pip install "
            f'"napari-unet[fast]" or use engine="auto" (installed: {", ".join(installed)})'
        )
    if name != "torch" and device.type != "cpu":
        raise UserInputError(
            f"engine {name!r} runs on the CPU; use device='cpu' (or engine='torch' on {device})"
        )
    return name


def _int8_if_verified(model: UNet) -> tuple[str, ...]:
    """``("openvino-int8",)`` for models in :data:`INT8_VERIFIED`, else ``()``."""
    return ("openvino-int8",) if _digest(model) in INT8_VERIFIED else ()


def _digest(model: UNet) -> str:
    """:func:`model_digest`, cached per model object until its weights change."""
    version = parameter_version(model)
    with _LOCK:
        hit = _DIGESTS.get(model)
    if hit is not None and hit[0] == version:
        return hit[1]
    digest = model_digest(model)
    with _LOCK:
        _DIGESTS[model] = (version, digest)
    return digest


def is_loaded(model: UNet, engine: str) -> bool:
    """Whether ``model`` is loaded in memory for ``engine`` in this process."""
    if engine == "torch":
        return True
    with _LOCK:
        hit = _RUNNERS.get(model, {}).get(engine)
    return hit is not None and hit[0] == parameter_version(model)


def is_prepared(model: UNet, engine: str) -> bool:
    """Whether ``model`` is exported (on disk) or loaded (in memory) for ``engine``."""
    if engine == "torch":
        return True
    return is_loaded(model, engine) or _onnx_path(model, int8=engine.endswith("int8")).exists()


def engine_runner(model: UNet, engine: str, device: torch.device) -> Runner:
    """A function from a batch ``(B, C, *tile)`` float32 to probabilities ``(B, K, *out)``.

    The function takes an optional ``stop`` event as well: set during a batch, the batch is
    abandoned and the function returns ``None`` (see :mod:`.interrupt`).

    ``engine`` is a resolved name (see :func:`resolve_engine`). The first call for a model
    exports it (when not cached on disk), loads it and verifies it against torch; later calls
    return the same runner. An engine that fails verification or cannot load the export is
    replaced by torch, with a warning.
    """
    if engine == "torch":
        return _torch_runner(model, device)
    version = parameter_version(model)
    with _LOCK:
        hit = _RUNNERS.get(model, {}).get(engine)
    if hit is not None and hit[0] == version:
        return hit[1]
    runner = _checked(model, engine, device)
    with _LOCK:
        _RUNNERS.setdefault(model, {})[engine] = (version, runner)
    return runner


def _torch_runner(model: UNet, device: torch.device) -> Runner:
    net = inference_model(model, device)

    def forward(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            logits = net(to_model_layout(torch.from_numpy(x).to(device), net))
            return _probabilities(logits).float().cpu().numpy()

    def run(x: np.ndarray, stop: threading.Event | None = None) -> np.ndarray | None:
        return torch_forward(net, lambda: forward(x), stop)

    return run


def _checked(model: UNet, engine: str, device: torch.device) -> Runner:
    """The engine's runner if it matches torch on a test input, else torch's (a warning)."""
    int8 = engine.endswith("int8")
    try:
        runner = _LOADERS[engine](_int8_exported(model) if int8 else _exported(model))
        x = _test_input(model, realistic=int8)
        diff = np.abs(runner(x) - _torch_runner(model, torch.device("cpu"))(x))
    except UserInputError:
        raise
    except Exception as exc:  # an engine that cannot run this model: say so and use torch
        log.warning("engine %s failed for this model (%s); using torch", engine, exc)
        return _torch_runner(model, device)
    error, limit = (float(diff.mean()), INT8_TOLERANCE) if int8 else (float(diff.max()), TOLERANCE)
    if error > limit:
        log.warning(
            "engine %s differs from torch by %.2g (> %g) for this model; using torch",
            engine,
            error,
            limit,
        )
        return _torch_runner(model, device)
    log.info("engine %s verified for this model (difference %.2g)", engine, error)
    return runner


def _test_input(model: UNet, realistic: bool = False) -> np.ndarray:
    """Random normal values; ``realistic``: a tile of the sample (int8 ranges fit images)."""
    if realistic:
        from .quantize import calibration_tiles

        return calibration_tiles(model)[0]
    size = model.valid_sizes_near(4 * 2**model.config.depth)[1]
    rng = np.random.default_rng(0)
    return rng.normal(size=(1, model.in_channels, *(size,) * model.ndim)).astype(np.float32)


def _onnx_path(model: UNet, int8: bool = False) -> Path:
    return cache_dir() / f"{_digest(model)}{'-int8' if int8 else ''}.onnx"


def _exported(model: UNet) -> Path:
    path = _onnx_path(model)
    if not path.exists():
        log.info("exporting the model for a faster engine (once per model): %s", path)
        export_onnx(model, path)
    return path


def _int8_exported(model: UNet) -> Path:
    from .quantize import quantize_int8

    path = _onnx_path(model, int8=True)
    if not path.exists():
        log.info("quantizing the model to int8 (once per model): %s", path)
        quantize_int8(model, _exported(model), path)
    return path


def _probabilities(logits: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)


def _numpy_probabilities(logits: np.ndarray) -> np.ndarray:
    return _probabilities(torch.from_numpy(np.ascontiguousarray(logits))).numpy()


def _onnxruntime_runner(path: Path) -> Runner:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(x: np.ndarray, stop: threading.Event | None = None) -> np.ndarray | None:
        logits = onnxruntime_run(session, {name: np.ascontiguousarray(x)}, stop)
        return None if logits is None else _numpy_probabilities(logits)

    return run


def _openvino_runner(path: Path) -> Runner:
    """OpenVINO, compiled for each tile shape (static shapes run faster), in float32.

    ``INFERENCE_PRECISION_HINT=f32``: on CPUs with bfloat16 units OpenVINO would otherwise
    compute in bf16 (about 1e-2 off torch).
    """
    import openvino as ov

    core = ov.Core()
    config = {
        "INFERENCE_PRECISION_HINT": "f32",
        "INFERENCE_NUM_THREADS": torch.get_num_threads(),
        "PERFORMANCE_HINT": "LATENCY",
    }
    compiled: OrderedDict[tuple[int, ...], object] = OrderedDict()
    lock = threading.Lock()

    def request(shape: tuple[int, ...]):
        with lock:
            if shape in compiled:
                compiled.move_to_end(shape)
                return compiled[shape]
        graph = core.read_model(str(path))
        graph.reshape({graph.inputs[0].any_name: ov.PartialShape(list(shape))})
        req = core.compile_model(graph, "CPU", config).create_infer_request()
        with lock:
            compiled[shape] = req
            while len(compiled) > _OV_SHAPES:
                compiled.popitem(last=False)
        return req

    def run(x: np.ndarray, stop: threading.Event | None = None) -> np.ndarray | None:
        x = np.ascontiguousarray(x, np.float32)
        req = request(x.shape)
        with lock:  # one infer request per shape: calls from several threads take turns
            logits = openvino_infer(req, {0: x}, stop)
        return None if logits is None else _numpy_probabilities(logits)

    return run


_LOADERS: dict[str, Callable[[Path], Runner]] = {
    "onnxruntime": _onnxruntime_runner,
    "openvino": _openvino_runner,
    "openvino-int8": _openvino_runner,
}
