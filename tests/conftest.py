"""Shared fixtures: tiny models and model files, the shared data folder, a fast torch."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
#: the project's shared data, beside the checkout (``../shared/data``)
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(autouse=True, scope="session")
def _single_thread_torch():
    """Tiny test networks run faster on one thread than with inter-thread hand-offs."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True, scope="session")
def _engine_cache(tmp_path_factory):
    """Exported models (engine="auto" and friends) go to a temporary cache, not the user's."""
    import os

    old = os.environ.get("NAPARI_UNET_CACHE")
    os.environ["NAPARI_UNET_CACHE"] = str(tmp_path_factory.mktemp("engine-cache"))
    yield
    if old is None:
        os.environ.pop("NAPARI_UNET_CACHE", None)
    else:
        os.environ["NAPARI_UNET_CACHE"] = old


@pytest.fixture
def tiny_model():
    """A small untrained 2D instance model: ``UNet(1, 3, depth=2, base_filters=4)``, eval mode."""
    import torch

    from napari_unet import UNet

    torch.manual_seed(0)
    return UNet(1, 3, depth=2, base_filters=4).eval()


@pytest.fixture
def tiny_model_file(tiny_model, tmp_path) -> Path:
    """``tiny_model`` saved as a model file in ``tmp_path``."""
    from napari_unet import save_model

    return save_model(tiny_model, tmp_path / "tiny.safetensors", name="tiny")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared real data (``../shared/data`` next to the repository root)."""
    if not SHARED_DATA.is_dir():
        raise FileNotFoundError(
            f"the shared data folder {SHARED_DATA} is missing: the tests expect the project's "
            "shared/ folder beside the repository checkout (../shared/data)"
        )
    return SHARED_DATA
