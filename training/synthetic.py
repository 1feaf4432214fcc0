"""Built-in synthetic chest CT slices: a random thorax phantom, scanned and reconstructed.

Each slice is simulated, not drawn: a phantom in Hounsfield units (HU) becomes linear attenuation,
is projected to a parallel-beam sinogram, gets Poisson photon noise, is reconstructed by filtered
back-projection and shown in a lung window. Anatomy, lesion and noise use separate random streams, so
a cancer slice and a normal slice with the same seed share their anatomy and differ only by the lesion.
"""

from __future__ import annotations

import cmath
import math
import multiprocessing
import os
import zlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache

import numpy as np
from scipy import ndimage, sparse

from service.card import TASK_LABELS

CLASSES = TASK_LABELS["multiclass"]  # every label has a phantom: normal, and one per cancer type

MU_WATER = 0.19  # 1/cm, water at the ~70 keV effective energy of a 120 kVp beam
FOV_CM = 40.0  # the reconstruction circle spans the image width
WINDOW_HU = (-1000.0, 100.0)  # lung window W1100/L-450: air is black, as in the Kaggle slices
PHOTONS = (8e4, 1e6)  # unattenuated photons per ray, log-uniform per image: 15-45 HU noise in soft tissue
MAX_GRID = 256  # larger outputs are upsampled: the projector's memory grows with the grid cubed
LESION_RADIUS = {  # normalised radius = diameter as a fraction of the image width
    "adenocarcinoma": (0.06, 0.13),  # T2 (3-5 cm) in a ~35 cm field, as the Kaggle folders are staged
    "large_cell_carcinoma": (0.10, 0.18),
    "squamous_cell_carcinoma": (0.06, 0.14),
}


def _views(n: int) -> int:
    return max(24, n // 2)  # noise texture needs no more; edges never pass through this FBP


@lru_cache(maxsize=2)
def _grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    c = ((np.arange(n) - (n - 1) / 2) / (n / 2)).astype(np.float32)
    return np.meshgrid(c, c)  # x to the patient's left, y posterior; the FOV circle has radius 1


def _ray_bins(n: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    # Where each pixel centre inside the FOV circle lands on the detector (in bins), for every view.
    x, y = (g * (n / 2) for g in _grid(n))
    inside = x**2 + y**2 <= (n / 2) ** 2
    theta = np.linspace(0, np.pi, m, endpoint=False, dtype=np.float32)
    return x[inside, None] * np.cos(theta) + y[inside, None] * np.sin(theta) + (n + 1) / 2, inside


@lru_cache(maxsize=2)
def _projector(n: int, m: int) -> tuple[sparse.csc_matrix, np.ndarray]:
    # Pixel-driven projector, each pixel split between its two nearest bins, built straight as CSC.
    t, inside = _ray_bins(n, m)
    bin0 = np.floor(t).astype(np.int32)
    rows = bin0 + np.arange(m, dtype=np.int32) * (n + 2)
    data = np.stack([1 - (t - bin0), t - bin0], -1).ravel()
    indptr = np.arange(0, data.size + 1, 2 * m)
    shape = (m * (n + 2), t.shape[0])
    return sparse.csc_matrix((data, np.stack([rows, rows + 1], -1).ravel(), indptr), shape=shape), inside


@lru_cache(maxsize=2)
def _backprojector(n: int, m: int) -> tuple[sparse.csr_matrix, np.ndarray]:
    # Nearest bin of projections sampled at half-bin spacing: as good as linear interpolation at the
    # native spacing, with half the memory traffic (the matrix product is most of the time per slice).
    t, inside = _ray_bins(n, m)
    cols = (np.rint(2 * t).astype(np.int32) + np.arange(m, dtype=np.int32) * 2 * (n + 2)).ravel()
    indptr = np.arange(0, cols.size + 1, m)
    shape = (t.shape[0], m * 2 * (n + 2))
    return sparse.csr_matrix((np.ones(cols.size, np.float32), cols, indptr), shape=shape), inside


@lru_cache(maxsize=2)
def _shepp_logan(ndet: int) -> np.ndarray:
    # Discrete ramp built in the spatial domain (Kak & Slaney) to avoid a DC offset, times a sinc.
    size = 2 ** int(np.ceil(np.log2(2 * ndet)))
    k = np.concatenate([np.arange(1, size // 2 + 1, 2), np.arange(size // 2 - 1, 0, -2)])
    h = np.zeros(size)
    h[0], h[1::2] = 0.25, -1 / (np.pi * k) ** 2
    omega = np.pi * np.fft.fftfreq(size)[1:]
    filt = 2 * np.real(np.fft.fft(h))
    filt[1:] *= np.sin(omega) / omega
    return filt[: size // 2 + 1]


def _line_integrals(hu: np.ndarray) -> np.ndarray:
    # Photon statistics only need the mean attenuation along each ray, which varies smoothly across
    # rays: project at half resolution (a quarter of the cost), then interpolate to the full detector.
    n, half = hu.shape[0], hu.shape[0] // 2
    a, inside = _projector(half, _views(n))
    mu = MU_WATER * (1 + hu[: 2 * half, : 2 * half].reshape(half, 2, half, 2).mean(axis=(1, 3)) / 1000)
    coarse = (a @ np.maximum(mu[inside], 0).astype(np.float32)).reshape(-1, half + 2) * (2 * FOV_CM / n)
    j = (np.arange(n + 2) - (n + 1) / 2) / 2 + (half + 1) / 2
    j0 = np.clip(np.floor(j).astype(int), 0, half)
    return coarse[:, j0] * (1 - (j - j0)) + coarse[:, j0 + 1] * (j - j0)


def _scan(hu: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Radon transform, Poisson noise, FBP: phantom HU in, reconstructed HU out."""
    n = hu.shape[0]
    m, ndet = _views(n), n + 2
    clean = _line_integrals(hu)
    photons = math.exp(rng.uniform(*np.log(PHOTONS)))
    counts = rng.poisson(photons * np.exp(-clean))
    # A ray with no photons left reads as half a count, as detector calibration clamps it.
    noise = (-np.log(np.maximum(counts, 0.5) / photons) - clean) / (FOV_CM / n)
    # Projection-domain noise insertion (as in low-dose simulation tools): only the noise goes through
    # this FBP, whose few views would alias every sharp edge; the noise-free image of a finely sampled
    # scanner is the phantom blurred by its point-spread function (sigma fitted to a 600-view FBP).
    filt = _shepp_logan(ndet)
    size = 2 * (filt.size - 1)
    # An inverse FFT of twice the length samples the filtered projections at half-bin spacing.
    fine = np.fft.irfft(np.fft.rfft(noise, size, axis=1) * filt, 2 * size, axis=1)[:, : 2 * ndet]
    out = ndimage.gaussian_filter(hu, 0.7)
    b, inside = _backprojector(n, m)
    out[inside] += (b @ fine.ravel().astype(np.float32)) * (np.pi / m * 1000 / MU_WATER)  # 2 * pi/(2m)
    out[~inside] = -1000
    return out


def _shape(x, y, centre, axes, rot=0.0, power=2.0, rng=None, bumps=0.0, order=6) -> np.ndarray:
    # "level" < 1 inside a rotated superellipse; random harmonics with a 1/k spectrum make the
    # outline lobulated rather than jagged. z**k gives exp(i k phi) without any trigonometry.
    c, s = math.cos(rot), math.sin(rot)
    dx, dy = x - centre[0], y - centre[1]
    u, v = (dx * c + dy * s) / axes[0], (dy * c - dx * s) / axes[1]
    level = np.hypot(u, v) if power == 2 else (np.abs(u) ** power + np.abs(v) ** power) ** (1 / power)
    if bumps:
        z, zk, radius = (u + 1j * v) / np.maximum(np.hypot(u, v), 1e-6), 1.0, 1.0
        for k in range(1, order + 1):
            zk = zk * z
            if k > 1:
                radius = radius + np.real(complex(rng.normal(0, bumps / k) * cmath.exp(6.3j * rng.random())) * zk)
        level = level / radius
    return level


def _tubes(segments: list[tuple[float, ...]], shape: tuple[int, int]) -> np.ndarray:
    # Anti-aliased coverage (0..1) of tubes along (x0, y0, x1, y1, radius) segments, in pixels:
    # rasterise the centre lines, then a distance transform finds each pixel's nearest centre.
    seg = np.array(segments, dtype=np.float64).reshape(-1, 5)
    radius = np.zeros(shape, np.float32)
    if not seg.size:
        return radius
    t = np.linspace(0, 1, int(np.hypot(seg[:, 2] - seg[:, 0], seg[:, 3] - seg[:, 1]).max() * 2) + 2)[:, None]
    ix, iy = (
        np.clip(np.rint(seg[:, i] + t * (seg[:, i + 2] - seg[:, i])), 0, shape[1 - i] - 1).astype(int) for i in (0, 1)
    )
    np.maximum.at(radius, (iy.ravel(), ix.ravel()), np.broadcast_to(seg[:, 4], ix.shape).ravel())
    dist, (ny, nx) = ndimage.distance_transform_edt(radius == 0, return_indices=True)
    return np.clip(radius[ny, nx] - dist + 0.5, 0, 1)


def _walk(rng, start, angle, radius, step, allowed, segments) -> None:
    # A branching, tapering random walk: vessels running in the slice plane, thinning outwards.
    stack, (h, w) = [(start, angle, radius)], allowed.shape
    while stack:
        (px, py), angle, r = stack.pop()
        while r > 0.45:
            angle += rng.normal(0, 0.2)
            qx, qy = px + step * math.cos(angle), py + step * math.sin(angle)
            if not (0 <= qx < w and 0 <= qy < h and allowed[int(qy), int(qx)]):
                break
            segments.append((px, py, qx, qy, r))
            px, py, r = qx, qy, r * rng.uniform(0.86, 0.95)
            if rng.random() < 0.15:
                stack.append(((px, py), angle + rng.uniform(0.4, 0.9) * (1 - 2 * (rng.random() < 0.5)), r * 0.8))


def _wall_and_spine(u, v, hu, rng, cav, inner) -> tuple[float, float]:
    # Ribs and sternum sit in the chest wall just outside the cavity; the vertebra sits behind it.
    (_, c0), (ca, cb) = cav
    for phi in rng.uniform(-np.pi, np.pi, rng.integers(7, 13)):
        if abs(math.sin(phi)) < 0.92:  # no ribs over the sternum or the spine
            centre = (1.07 * ca * math.cos(phi), c0 + 1.07 * cb * math.sin(phi))
            level = _shape(u, v, centre, (0.06, 0.022), phi + math.pi / 2)
            hu[level < 1] = np.where(level[level < 1] < 0.6, 250, 700)
    level = _shape(u, v, (0.0, c0 - cb - 0.03), (0.09, 0.035))
    hu[level < 1] = np.where(level[level < 1] < 0.6, 250, 600)
    rv = rng.uniform(0.085, 0.11)
    vy = c0 + cb - rv - 0.1
    hu[inner & (_shape(u, v, (0.0, vy + 0.1), (rv + 0.04, rv + 0.14), power=3.0) < 1)] = 45  # paraspinal
    arch = vy + rv + 0.045
    hu[_shape(u, v, (0.0, arch + 0.06), (0.022, 0.065)) < 1] = 600  # spinous process
    hu[_shape(u, v, (0.0, arch), (0.2, 0.028), power=3.0) < 1] = 600  # laminae, transverse processes
    hu[_shape(u, v, (0.0, arch), (0.065, 0.065)) < 1] = 600
    hu[_shape(u, v, (0.0, arch), (0.042, 0.045)) < 1] = 20  # spinal canal: cord and CSF
    level = _shape(u, v, (0.0, vy), (rv, rv * 0.9))
    hu[level < 1] = np.where(level[level < 1] < 0.85, 250, 800)  # cancellous body, cortical rim
    return rv, vy


def _heart_and_lungs(u, v, hu, rng, cav, inner, rv, vy) -> tuple[np.ndarray, list]:
    (_, c0), (ca, cb) = cav
    hc = (rng.uniform(0.05, 0.14), rng.uniform(-0.2, -0.08))
    ha = (rng.uniform(0.25, 0.34), rng.uniform(0.19, 0.26))
    heart = _shape(u, v, hc, ha, rng.uniform(-0.7, -0.3), rng=rng, bumps=0.05)
    ar = rng.uniform(0.045, 0.065)
    aorta = _shape(u, v, (rv + ar - 0.01, vy - 0.6 * rv), (ar, ar))
    back = _shape(u, v, (0.02, (hc[1] + vy) / 2), (0.12, (vy - hc[1]) / 2 + 0.04), rng=rng, bumps=0.1)
    media = (np.abs(u) < rng.uniform(0.02, 0.06)) | (heart < 1.15) | (aorta < 1.4) | (back < 1)
    lung = inner & ~media & (_shape(u, v, (0.0, vy + 0.1), (rv + 0.04, rv + 0.14), power=3.0) > 1)
    for side in (-1, 1):  # irregular medial outlines; the chest wall keeps the lateral ones smooth
        blob = _shape(u, v, (side * ca * 0.5, c0 + 0.04), (ca * 0.62, cb * 1.1), rng=rng, bumps=0.2)
        lung &= (blob < 1) | (side * u < 0) | (side * u > 0.4 * ca)
    texture = ndimage.gaussian_filter(rng.standard_normal(u.shape, np.float32), u.shape[0] / 60)
    gravity = 50 * np.clip((v - c0) / cb, -1, 1)  # the dependent lung is denser
    hu[lung] = (-860 + 20 * texture / texture.std() + gravity)[lung]
    hu[heart < 1.12] = -90  # pericardial fat
    hu[heart < 1] = 40
    hu[aorta < 1] = 40
    hu[_shape(u, v, (-0.03, vy - rv - 0.05), (0.03, 0.025)) < 1] = 30  # oesophagus
    hila = [(-0.22, hc[1] + 0.1), (0.24, hc[1] + ha[1] + 0.06)]
    for hx, hy in hila:  # pulmonary arteries entering the lungs
        hu[_shape(u, v, (hx, hy), (0.05, 0.035), rng.uniform(0, 3.0)) < 1] = 40
    return lung, hila


def _anatomy(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, list]:
    """Phantom HU, lung mask and hilum points (pixels) of a random thorax."""
    x, y = _grid(n)
    scale, q = rng.uniform(0.72, 0.9), rng.uniform(0.62, 0.74)  # patient half-width, AP/lateral ratio
    cx, cy, rot = rng.normal(0, 0.02), rng.uniform(-0.06, 0.0), rng.normal(0, 0.04)
    c, s = math.cos(rot), math.sin(rot)
    full, lung = np.full((n, n), -1000, np.float32), np.zeros((n, n), bool)
    couch = y - cy - scale * q - 0.05 + 0.12 * (x - cx) ** 2  # the curved carbon-fibre table top
    full[(np.abs(x - cx) < 0.7) & (np.abs(couch) < 0.015)] = 0
    # The rest lies in the patient's bounding box: working there only halves the cost.
    half_w, half_h = scale * (abs(c) + q * abs(s)) + 0.06, scale * (q * abs(c) + abs(s)) + 0.06
    box = tuple(
        slice(max(0, int((m - r + 1) * n / 2)), int((m + r + 1) * n / 2) + 1) for m, r in ((cy, half_h), (cx, half_w))
    )
    x, y, hu = x[box], y[box], full[box]
    u, v = ((x - cx) * c + (y - cy) * s) / scale, ((y - cy) * c - (x - cx) * s) / scale
    body = _shape(u, v, (0.0, 0.0), (1.0, q), power=rng.uniform(2.2, 2.8), rng=rng, bumps=0.03)
    fat, wall = rng.uniform(0.03, 0.1), rng.uniform(0.05, 0.08)
    hu[body < 1] = -100
    hu[body < 1 - fat] = 45
    cav = ((0.0, -0.02), (1 - fat - wall, q * (1 - fat) - wall - 0.02))
    inner = _shape(u, v, *cav, power=2.2) < 1
    hu[inner] = -70  # mediastinal fat fills what the organs leave
    rv, vy = _wall_and_spine(u, v, hu, rng, cav, inner)
    lung[box], hila = _heart_and_lungs(u, v, hu, rng, cav, inner, rv, vy)
    hila = [
        ((cx + scale * (a * c - b * s) + 1) * n / 2 - 0.5, (cy + scale * (a * s + b * c) + 1) * n / 2 - 0.5)
        for a, b in hila
    ]
    local = [(hx - box[1].start, hy - box[0].start) for hx, hy in hila]
    _vessels(rng, hu, lung[box], inner, local, n)
    return full, lung, hila


def _vessels(rng, hu, lung, inner, hila, n) -> None:
    segments: list[tuple[float, ...]] = []
    for side, hilum in zip((math.pi, 0.0), hila, strict=True):
        for _ in range(rng.integers(3, 8)):
            angle = side + rng.uniform(-1.6, 1.6)
            _walk(rng, hilum, angle, rng.uniform(0.008, 0.016) * n / 2, 0.025 * n / 2, inner, segments)
    iy, ix = np.nonzero(lung)
    near = np.exp(-np.min([np.hypot(ix - hx, iy - hy) for hx, hy in hila], axis=0) / (0.3 * n / 2))
    for k in rng.choice(ix.size, rng.integers(30, 120), p=near / near.sum()):  # vessels seen end-on
        segments.append((ix[k], iy[k], ix[k], iy[k], rng.uniform(0.003, 0.01) * n / 2 * (0.6 + near[k])))
    cover = _tubes(segments, lung.shape) * lung
    hu += cover * (40 - hu)


def _lesion_centre(rng, label, lung, hila, r) -> tuple[float, float]:
    # Adenocarcinoma and large cell carcinoma favour the periphery, squamous cell the hilum.
    n = lung.shape[0]
    depth = ndimage.distance_transform_edt(lung) / (n / 2)
    # Peripheral masses sit a radius deep at least, wholly inside the lung; a hilar one may touch the hilum.
    iy, ix = np.nonzero(depth > (0.6 if label == "squamous_cell_carcinoma" else 1.0) * r)
    if label == "squamous_cell_carcinoma":
        dist = np.min([np.hypot(ix - hx, iy - hy) for hx, hy in hila], axis=0) / (n / 2)
        weight = np.exp(-((dist / 0.08) ** 2))
    else:
        weight = np.exp(-depth[iy, ix] / 0.08)
    if not ix.size:  # lungs too small for this lesion: use the deepest point
        iy, ix = np.unravel_index([np.argmax(depth)], depth.shape)
        weight = np.ones(1)
    k = rng.choice(ix.size, p=weight / weight.sum())
    return float((ix[k] + 0.5) / (n / 2) - 1), float((iy[k] + 0.5) / (n / 2) - 1)


def _lesion(label: str, rng: np.random.Generator, hu, lung, hila) -> np.ndarray:
    """Paints a mass of the given class into the lungs; returns its mask."""
    n = hu.shape[0]
    x, y = _grid(n)
    r = math.exp(rng.uniform(*np.log(LESION_RADIUS[label])))
    centre = _lesion_centre(rng, label, lung, hila, r)
    axes, rot = (r, r * rng.uniform(0.75, 1)), rng.uniform(0, np.pi)
    bumps, order = {"adenocarcinoma": (0.35, 7), "large_cell_carcinoma": (0.15, 4)}.get(label, (0.22, 5))
    core = _shape(x, y, centre, axes, rot, rng=rng, bumps=bumps, order=order)
    mask = (core < 1) & lung
    if label == "adenocarcinoma":
        if rng.random() < 0.5:  # ground-glass rim of lepidic growth
            halo = (core < rng.uniform(1.2, 1.5)) & lung
            hu[halo] = np.maximum(hu[halo], -450)
            mask |= halo
        spicules = _spicules(rng, centre, r, n)
        mask |= spicules > 0.3
        hu += spicules * lung * (30 - hu)
    hu[(core < 1) & lung] = 35
    if label == "large_cell_carcinoma" and rng.random() < 0.4:
        hu[(core < 0.5) & lung] = 15  # central necrosis
    if label == "squamous_cell_carcinoma" and rng.random() < 0.7:
        offset = rng.normal(0, 0.15 * r, 2)
        hole = _shape(
            x, y, (centre[0] + offset[0], centre[1] + offset[1]), (r * rng.uniform(0.35, 0.6),) * 2, rng=rng, bumps=0.3
        )
        hu[(hole < 1) & (core < 1) & lung] = -1000  # cavity: air in a thick irregular wall
    return mask & lung


def _spicules(rng, centre, r, n) -> np.ndarray:
    segments = []
    cx, cy = ((c + 1) * n / 2 - 0.5 for c in centre)
    for angle in rng.uniform(0, 2 * np.pi, rng.integers(6, 16)):
        ends = np.linspace(0.6 * r, r * rng.uniform(0.8, 2.0), 7) * (n / 2)
        widths = np.linspace(0.012 * n / 2, 0.3, 6)  # tapers outwards
        for a, b, w in zip(ends[:-1], ends[1:], widths, strict=True):
            c, s = math.cos(angle), math.sin(angle)
            segments.append((cx + a * c, cy + a * s, cx + b * c, cy + b * s, w))
    return _tubes(segments, (n, n))


def _streams(seed: int) -> list[np.random.Generator]:
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3)]


def _check(label: str) -> None:
    if label not in CLASSES:
        raise ValueError(f"unknown label {label!r}; expected one of {', '.join(CLASSES)}")


def _phantom(label: str, seed: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    _check(label)
    anatomy, lesion, _ = _streams(seed)
    hu, lung, hila = _anatomy(anatomy, n)
    mask = np.zeros_like(lung) if label == "normal" else _lesion(label, lesion, hu, lung, hila)
    return hu, lung, mask


def generate_slice(label: str, seed: int, size: int = 256) -> np.ndarray:
    """One slice as a (size, size) uint8 array (lung window). Raises ValueError for an unknown label."""
    n = min(size, MAX_GRID)
    hu, _, _ = _phantom(label, seed, n)
    lo, hi = WINDOW_HU
    grey = (_scan(hu, _streams(seed)[2]) - lo) * (255 / (hi - lo))
    if size != n:
        grey = ndimage.zoom(grey, size / n, order=1, mode="nearest", grid_mode=True)
    return np.clip(np.rint(grey), 0, 255).astype(np.uint8)


def _image_seed(seed: int, label: str, index: int) -> int:
    sequence = np.random.SeedSequence([seed, zlib.crc32(label.encode()), index])
    return int(sequence.generate_state(1, np.uint64)[0])


def _render(task: tuple[str, int, int]) -> np.ndarray:
    return generate_slice(*task)


def generate(
    labels: Sequence[str], images_per_class: int, size: int, seed: int, workers: int | None = None
) -> Iterator[tuple[str, int, np.ndarray]]:
    """Yields (label, index, image) for every label and index 0..images_per_class-1, in a fixed order
    (label-major), computed in a process pool of `workers` (default: the CPUs available to the process,
    os.sched_getaffinity). Per-image seed derived from (seed, label, index) with numpy SeedSequence so
    results do not depend on workers. Unknown labels raise ValueError here, before any work."""
    for label in labels:
        _check(label)
    keys = [(label, index) for label in labels for index in range(images_per_class)]
    tasks = [(label, _image_seed(seed, label, index), size) for label, index in keys]
    return _run(keys, tasks, workers or len(os.sched_getaffinity(0)))


def _run(keys, tasks, workers: int) -> Iterator[tuple[str, int, np.ndarray]]:
    if workers == 1 or len(tasks) < 2:
        images: Iterator[np.ndarray] = map(_render, tasks)
        yield from ((label, index, image) for (label, index), image in zip(keys, images, strict=True))
        return
    # spawn, not fork: forking a parent that already runs threads (torch, MLflow) can deadlock.
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    try:
        images = pool.map(_render, tasks, chunksize=8)  # small chunks: results stream steadily
        yield from ((label, index, image) for (label, index), image in zip(keys, images, strict=True))
    finally:
        pool.shutdown(cancel_futures=True)  # a consumer that stops early does not wait for the rest
