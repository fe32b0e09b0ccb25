"""The finished blocks of a blockwise zarr run, kept so that a stopped run resumes.

A run into a zarr store ``out`` keeps its work in a hidden folder beside it,
``.<out name>.partial``:

* ``labels.zarr``: the blocks' labels with their local ids, as each block writes them;
* ``blocks/f<frame>-<z>-<y>-<x>.npz``: one record per finished block (its number of ids, the
  ids in its core and its skins), written atomically *after* the block's labels: a block
  with a record is whole;
* ``run.json``: what the blocks depend on (the volume's shape and dtype, the model's
  weights, the block plan, the tiling, the post-processing) and each time point's
  normalisation.

A run stopped at any moment (Ctrl-C, Cancel, a kill, a power cut) keeps the folder. The same
run again segments only the blocks without a record, then joins every block's ids across
faces as an uninterrupted run does, so its labels are the same. A run with other settings
is refused, naming what differs, and the folder is left as it is. The folder is removed once
the output is complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from ....common.errors import UserInputError
from .plan import Block, BlockPlan

log = logging.getLogger(__name__)

__all__ = ["BlockLedger", "ledger_path", "run_fingerprint"]

#: the layout of the folder; a folder of another version is not resumed
VERSION = 1


def ledger_path(out: str | os.PathLike) -> Path:
    """The folder that keeps the finished blocks of a run into ``out``."""
    out = Path(out)
    return out.with_name(f".{out.name}.partial")


def run_fingerprint(job: Any, plan: BlockPlan, tiling: dict, z_factor: float) -> dict:
    """What the blocks' labels depend on, as JSON-compatible values."""
    return {
        "version": VERSION,
        "shape": [int(n) for n in job.labels_shape],
        "dtype": str(job.canon.dtype),
        "axes": job.caxes,
        "model": _model_digest(job.model),
        "output": job.output,
        "post-processing": _plain(job.post),
        "block": list(plan.block),
        "halo": list(plan.halo),
        "z factor": round(float(z_factor), 9),
        "tiling": {k: _plain(tiling.get(k)) for k in ("tile_shape", "overlap", "engine", "tta")},
    }


def _plain(value: Any) -> Any:
    """``value`` as JSON gives it back (tuples as lists, numpy scalars as numbers)."""
    return json.loads(
        json.dumps(value, default=lambda v: v.item() if hasattr(v, "item") else str(v))
    )


def _model_digest(model: Any) -> str:
    """SHA-256 of the network's weights (or, for a zoo package, of its source)."""
    h = hashlib.sha256()
    state = getattr(model, "state_dict", None)
    if state is None:
        h.update(str(getattr(model, "source", type(model).__name__)).encode())
        return h.hexdigest()
    for name, tensor in sorted(state().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _difference(key: str, kept: Any, now: Any) -> str:
    if key == "model":
        return "model (other weights)"
    return f"{key} ({json.dumps(kept)} then, {json.dumps(now)} now)"


class BlockLedger:
    """The finished blocks of one run into ``out`` (see the module's text).

    Parameters
    ----------
    out : path-like
        The run's final zarr store.
    fingerprint : dict
        :func:`run_fingerprint` of the run.

    Raises
    ------
    UserInputError
        The folder holds blocks of a run with other settings (or of another version).
    """

    def __init__(self, out: str | os.PathLike, fingerprint: dict) -> None:
        self.folder = ledger_path(out)
        self.fingerprint = fingerprint
        self._records = self.folder / "blocks"
        self._state = self.folder / "run.json"
        self.resumed = 0
        if self._state.is_file():
            self._check(fingerprint)
            for left in self._records.glob(".*.tmp*"):  # a record a kill caught being written
                left.unlink(missing_ok=True)
            self.resumed = self.count()
        else:
            if self.folder.exists():  # made, but killed before its state was written
                shutil.rmtree(self.folder)
            self._records.mkdir(parents=True)
            self._write_state({"fingerprint": fingerprint, "normalization": {}})

    @property
    def labels_path(self) -> Path:
        """The zarr store of the blocks' labels (local ids)."""
        return self.folder / "labels.zarr"

    def _check(self, fingerprint: dict) -> None:
        try:
            kept = json.loads(self._state.read_text())["fingerprint"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise UserInputError(
                f"{self.folder} holds the blocks of an interrupted run, but its run.json "
                f"cannot be read ({err}); delete the folder to start the run again"
            ) from None
        differ = [
            k for k in sorted(set(kept) | set(fingerprint)) if kept.get(k) != fingerprint.get(k)
        ]
        if differ:
            said = [_difference(k, kept.get(k), fingerprint.get(k)) for k in differ]
            raise UserInputError(
                f"{self.folder} holds the finished blocks of an interrupted run with other "
                f"settings (they differ in: {'; '.join(said)}); run it again with those "
                "settings to resume it, or delete the folder to start a new run"
            )

    def _read_state(self) -> dict:
        return json.loads(self._state.read_text())

    def _write_state(self, state: dict) -> None:
        tmp = self._state.with_name(f".run.json.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(state, indent=1))
        os.replace(tmp, self._state)

    def check_normalization(self, frame: int, offset: np.ndarray, scale: np.ndarray) -> None:
        """Record time point ``frame``'s normalisation, or check it against the kept one.

        Raises
        ------
        UserInputError
            The volume's intensities are not those of the kept run (another volume of the
            same shape).
        """
        state = self._read_state()
        values = [
            np.asarray(offset, float).ravel().tolist(),
            np.asarray(scale, float).ravel().tolist(),
        ]
        kept = state["normalization"].get(str(frame))
        if kept is None:
            state["normalization"][str(frame)] = values
            self._write_state(state)
            return
        if not all(np.allclose(a, b, rtol=1e-6, atol=0) for a, b in zip(kept, values)):
            raise UserInputError(
                f"{self.folder} holds the finished blocks of an interrupted run on a volume "
                "with other intensities; give that volume to resume it, or delete the folder "
                "to start a new run"
            )

    def _record_path(self, frame: int, block: Block) -> Path:
        return self._records / f"f{frame}-{'-'.join(map(str, block.grid))}.npz"

    def finished(self, frame: int, plan: BlockPlan) -> dict[tuple[int, int, int], tuple]:
        """The records ``grid: (n, ids, skins)`` of time point ``frame``'s finished blocks."""
        found = {}
        for blk in plan.blocks:
            path = self._record_path(frame, blk)
            if not path.is_file():
                continue
            with np.load(path) as data:
                skins = {int(k[5:]): data[k] for k in data.files if k.startswith("skin_")}
                found[blk.grid] = (int(data["n"]), data["ids"], skins)
        return found

    def record(self, frame: int, block: Block, n: int, ids: np.ndarray, skins: dict) -> None:
        """Keep a finished block's record (after its labels are written)."""
        path = self._record_path(frame, block)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:  # a file object: np.savez adds no suffix
            np.savez(fh, n=np.int64(n), ids=ids, **{f"skin_{k}": v for k, v in skins.items()})
        os.replace(tmp, path)

    def count(self) -> int:
        """How many blocks have a record."""
        return len(list(self._records.glob("f*.npz")))

    def remove(self) -> None:
        """The run is complete: its work folder goes."""
        shutil.rmtree(self.folder, ignore_errors=True)
