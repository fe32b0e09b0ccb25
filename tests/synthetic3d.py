"""A synthetic z-stack: textured ellipsoidal nuclei of known ids, sampled anisotropically.

Used by the z-stack tests and ``benchmarks/bench_3d.py``. The nuclei are drawn in an
isotropic volume (``anisotropy`` times more slices than the stack), blurred by an
anisotropic point-spread function (longer in z, as in a confocal), and every
``anisotropy``-th plane is kept, with its labels.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def ellipsoid_stack(
    shape: tuple[int, int, int] = (16, 96, 96),
    anisotropy: float = 3.0,
    *,
    radius: tuple[float, float] = (8.0, 11.0),
    n: int | None = None,
    gap: float = 2.0,
    noise: float = 0.04,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """A stack of textured ellipsoids and their labels.

    Parameters
    ----------
    shape : (Z, Y, X)
        The stack's shape (slices of thickness ``anisotropy`` px).
    anisotropy : float
        Z step / XY pixel size (2-4 is typical for confocal nuclei).
    radius : (low, high)
        Semi-axes are drawn uniformly from this range (XY pixels), per axis.
    n : int, optional
        Ellipsoids to place (fewer if they do not fit); default: as many as roughly fill
        a third of the volume.
    gap : float
        Smallest distance (px) between two ellipsoids' bounding spheres.
    noise : float
        Standard deviation of the additive Gaussian camera noise (signal is ~0.5-1).
    seed : int
        Random seed.

    Returns
    -------
    image : ndarray of float32, shape ``shape``
    labels : ndarray of int32, shape ``shape``
        ``1..N``, one id per ellipsoid (ids of ellipsoids that no slice cuts are absent).
    """
    rng = np.random.default_rng(seed)
    nz = max(1, round(shape[0] * anisotropy))
    iso = (nz, shape[1], shape[2])
    if n is None:
        mean_volume = 4 / 3 * np.pi * np.mean(radius) ** 3
        n = max(1, int(np.prod(iso) / 3 / mean_volume))
    centres, radii = _place(iso, n, radius, gap, rng)
    labels = np.zeros(iso, np.int32)
    signal = np.zeros(iso, np.float32)
    texture = ndi.gaussian_filter(rng.standard_normal(iso).astype(np.float32), 1.5)
    texture /= texture.std() + 1e-6
    grid = np.indices(iso, dtype=np.float32)
    for i, (c, r) in enumerate(zip(centres, radii), start=1):
        box = tuple(
            slice(max(int(ci - ri) - 1, 0), min(int(ci + ri) + 2, s))
            for ci, ri, s in zip(c, r, iso)
        )
        d = sum(((grid[a][box] - c[a]) / r[a]) ** 2 for a in range(3))
        inside = d <= 1.0
        labels[box][inside] = i
        brightness = rng.uniform(0.5, 1.0)
        # a dimmer rim and a chromatin-like texture, as in DAPI / Hoechst nuclei
        signal[box][inside] = (
            brightness * (1.0 - 0.25 * d[inside]) * (1.0 + 0.25 * texture[box][inside])
        )
    blurred = ndi.gaussian_filter(signal, (0.6 * anisotropy, 1.0, 1.0))
    planes = np.minimum((np.arange(shape[0]) * anisotropy + anisotropy / 2).astype(int), nz - 1)
    image = blurred[planes] + 0.05 + noise * rng.standard_normal(shape).astype(np.float32)
    return image.astype(np.float32), _renumber(labels[planes])


def _place(iso, n, radius, gap, rng):
    """Non-overlapping ellipsoid centres and semi-axes, by rejection sampling."""
    centres, radii = [], []
    for _ in range(n * 50):
        if len(centres) == n:
            break
        r = rng.uniform(*radius, size=3)
        c = np.array([rng.uniform(0, s) for s in iso])
        if any(np.linalg.norm(c - c2) < r.max() + r2.max() + gap for c2, r2 in zip(centres, radii)):
            continue
        centres.append(c)
        radii.append(r)
    return centres, radii


def _renumber(labels: np.ndarray) -> np.ndarray:
    ids = np.unique(labels)
    ids = ids[ids > 0]
    lut = np.zeros(int(labels.max()) + 1, np.int32)
    lut[ids] = np.arange(1, ids.size + 1, dtype=np.int32)
    return lut[labels]
