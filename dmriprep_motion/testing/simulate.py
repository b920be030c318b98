"""Simulate motion-corrupted DWI series with a known ground truth.

Pure NumPy/SciPy/NiBabel (DIPY and nilearn only for masks and bundled templates); no Nipype.

A :class:`Phantom` is a motion-free description of a head in its own ("head") frame: per-voxel
compartments, each with a b0 signal, a diffusion tensor (RAS+ world frame, mm²/s) and an apparent
kurtosis.  The signal of one compartment for a b-value ``b`` and a unit gradient ``g`` is

.. math::

    S(b, g) = S_0 \\left(1 + \\frac{b\\, D_g K}{3}\\right)^{-3/K}, \\qquad D_g = g^T D g,

the signal of a Gamma distribution of diffusivities with mean ``D_g`` and kurtosis ``K``
(it tends to ``S0 exp(-b D_g)`` when ``K → 0``).  Its low-b expansion is the DKI signal
``S0 exp(-b D_g + b² D_g² K / 6)``, but unlike that expansion it stays monotonic and positive at any
b, so one shell of real data can be extrapolated to other b-values with a fixed kurtosis term.

Motion (conventions of :mod:`dmriprep_motion.testing.inject`): volume ``i`` is the head moved by the
4×4 RAS+ matrix ``M_i`` (tissue at ``p`` appears at ``M_i p``).  The scanner applies the gradient
``g_file`` (the b-vector written to the ``.bvec`` file) in the scanner frame, so the rotated head
experiences ``g_head = R_iᵀ g_file``; each moved volume is synthesized in the head frame with
``g_head``, then moved with ``M_i`` (cubic B-spline), then Rician noise is added.  The first volume
(a b0) is the reference: ``M_0 = I``, so the transform a correct method recovers (reference →
volume) is ``M_i`` itself, and correctly rotated output b-vectors equal ``g_head``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import nibabel as nb
import numpy as np
from scipy import ndimage as ndi

from dmriprep_motion.gradients import fsl_to_ras, ras_to_fsl, write_fsl
from dmriprep_motion.motion import matrix_from_params, resample_volume, write_itk

LOGGER = logging.getLogger("dmriprep_motion")

DEG = np.pi / 180.0

#: Motion patterns understood by :func:`motion_pattern`.
PATTERNS = ("none", "drift", "spikes", "moderate", "large")

#: Fixed apparent kurtosis used to extrapolate a single-shell tensor fit across b-values.
DEFAULT_KURTOSIS = 0.8


@dataclass
class Compartment:
    """One signal compartment of a phantom (maps on the phantom grid).

    Attributes
    ----------
    s0 : 3D array
        Non-diffusion-weighted signal of the compartment (already weighted by its volume fraction).
    tensor : (X, Y, Z, 3, 3) array
        Diffusion tensor in RAS+ world coordinates (mm²/s).
    kurtosis : float or 3D array
        Apparent kurtosis (0 gives a mono-exponential decay).
    """

    s0: np.ndarray
    tensor: np.ndarray
    kurtosis: float | np.ndarray = 0.0


@dataclass
class Phantom:
    """A motion-free head: compartments on a grid, a brain mask and a description."""

    affine: np.ndarray
    compartments: list[Compartment]
    mask: np.ndarray
    description: str = ""

    @property
    def shape(self) -> tuple[int, int, int]:
        """Grid shape."""
        return tuple(self.mask.shape)

    def s0(self) -> np.ndarray:
        """Total b0 signal."""
        return sum(c.s0 for c in self.compartments)

    def signal(self, bval: float, gradient_ras: np.ndarray) -> np.ndarray:
        """Noise-free signal (float32) of the motion-free head for one gradient (RAS+, head frame)."""
        if bval <= 0:
            return self.s0().astype(np.float32)
        g = np.asarray(gradient_ras, dtype=float)
        g = g / np.linalg.norm(g)
        out = np.zeros(self.shape, dtype=np.float64)
        for comp in self.compartments:
            dg = np.clip(np.einsum("...ij,i,j->...", comp.tensor, g, g), 0.0, None)
            out += comp.s0 * signal_attenuation(bval, dg, comp.kurtosis)
        return out.astype(np.float32)


def signal_attenuation(bval: float, diffusivity: np.ndarray, kurtosis: float | np.ndarray) -> np.ndarray:
    """Attenuation ``(1 + b D K / 3)^(-3/K)`` (``exp(-b D)`` where ``K`` is ~0)."""
    d = np.asarray(diffusivity, dtype=float)
    k = np.broadcast_to(np.asarray(kurtosis, dtype=float), d.shape)
    mono = np.exp(-bval * d)
    safe_k = np.where(k > 1e-6, k, 1.0)
    gamma = (1.0 + bval * d * safe_k / 3.0) ** (-3.0 / safe_k)
    return np.where(k > 1e-6, gamma, mono)


def true_diffusivity(apparent: np.ndarray, bval: float, kurtosis: float) -> np.ndarray:
    """Invert :func:`signal_attenuation`: diffusivity ``D`` from the apparent ``-ln(S/S0)/b`` at ``b``."""
    adc = np.asarray(apparent, dtype=float)
    if kurtosis <= 1e-6:
        return adc
    return 3.0 / (bval * kurtosis) * np.expm1(np.clip(kurtosis * bval * adc / 3.0, None, 50.0))


# ----------------------------------------------------------------------------------- schemes
def hemisphere_directions(n: int, *, offset: float = 0.0) -> np.ndarray:
    """``n`` nearly uniform unit vectors on a hemisphere (Fibonacci spiral), RAS+."""
    if n <= 0:
        return np.zeros((0, 3))
    i = np.arange(n) + 0.5
    z = 1.0 - i / n  # z in (0, 1): one hemisphere (antipodal symmetry covers the other)
    phi = np.pi * (1.0 + 5**0.5) * i + offset
    r = np.sqrt(1.0 - z**2)
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


def make_scheme(
    *, n_b0: int = 1, shells: dict[float, int] | None = None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """A gradient scheme with b0s interleaved among the diffusion-weighted volumes.

    Parameters
    ----------
    n_b0 : int
        Number of b0 volumes (the first volume is always a b0, the reference).
    shells : dict
        b-value → number of directions (default ``{1000: 30}``).
    seed : int
        Seed of the interleaving of shells.

    Returns
    -------
    bvals (N,) and RAS+ unit b-vectors (N, 3) (zeros for b0s), in acquisition order.
    """
    shells = shells or {1000.0: 30}
    rng = np.random.default_rng(seed)
    dw_b, dw_g = [], []
    for k, (bval, ndir) in enumerate(sorted(shells.items())):
        dw_b += [float(bval)] * ndir
        dw_g.append(hemisphere_directions(ndir, offset=0.7 * k))
    dw_b = np.array(dw_b)
    dw_g = np.concatenate(dw_g) if dw_g else np.zeros((0, 3))
    order = rng.permutation(dw_b.size) if len(shells) > 1 else np.arange(dw_b.size)
    dw_b, dw_g = dw_b[order], dw_g[order]
    n_total = n_b0 + dw_b.size
    b0_pos = set(np.round(np.linspace(0, n_total, n_b0, endpoint=False)).astype(int).tolist())
    bvals, bvecs, j = np.zeros(n_total), np.zeros((n_total, 3)), 0
    for i in range(n_total):
        if i not in b0_pos:
            bvals[i], bvecs[i] = dw_b[j], dw_g[j]
            j += 1
    return bvals, bvecs


# ----------------------------------------------------------------------------------- motion
def motion_pattern(
    pattern: str,
    n_volumes: int,
    *,
    seed: int = 0,
    max_translation: float | None = None,
    max_rotation: float | None = None,
) -> np.ndarray:
    """Per-volume rigid motion parameters ``(tx, ty, tz [mm], rx, ry, rz [rad])``.

    Patterns
    --------
    ``none``
        no motion.
    ``drift``
        slow random drift (a smoothed random walk), at most 1 mm / 1° by default.
    ``spikes``
        small drift plus a few sudden "nods" (pitch about x with a forward/down shift, up to
        3 mm / 3°) lasting one or two volumes.
    ``moderate``
        independent random motion of every volume, uniform within ±2 mm / ±2°.
    ``large``
        independent random motion of every volume, uniform within ±5 mm / ±5°.

    The first volume (the reference) never moves.
    """
    if pattern not in PATTERNS:
        raise ValueError(f"unknown motion pattern {pattern!r} (choose from {', '.join(PATTERNS)})")
    rng = np.random.default_rng(seed)
    defaults = {"none": (0, 0), "drift": (1, 1), "spikes": (3, 3), "moderate": (2, 2), "large": (5, 5)}
    max_t = defaults[pattern][0] if max_translation is None else max_translation
    max_r = (defaults[pattern][1] if max_rotation is None else max_rotation) * DEG
    params = np.zeros((n_volumes, 6))
    if pattern == "none" or n_volumes < 2:
        return params
    if pattern in ("drift", "spikes"):
        walk = np.cumsum(rng.normal(size=(n_volumes, 6)), axis=0)
        walk = ndi.gaussian_filter1d(walk, sigma=max(n_volumes / 10, 1.0), axis=0, mode="nearest")
        walk -= walk[0]
        scale = np.abs(walk).max(axis=0)
        scale[scale == 0] = 1.0
        walk /= scale
        drift_t, drift_r = (max_t, max_r) if pattern == "drift" else (0.3 * max_t / 3, 0.3 * max_r / 3)
        params[:, :3] = walk[:, :3] * drift_t * rng.uniform(0.5, 1.0, 3)
        params[:, 3:] = walk[:, 3:] * drift_r * rng.uniform(0.5, 1.0, 3)
        if pattern == "spikes":
            n_spikes = max(1, n_volumes // 10)
            starts = rng.choice(np.arange(1, n_volumes), size=n_spikes, replace=False)
            for start in starts:
                amp = rng.uniform(0.5, 1.0)
                for vol in range(start, min(start + int(rng.integers(1, 3)), n_volumes)):
                    params[vol, 3] += amp * max_r  # pitch (nod)
                    params[vol, 1] += 0.5 * amp * max_t  # forward
                    params[vol, 2] -= 0.5 * amp * max_t  # down
    else:
        params[:, :3] = rng.uniform(-max_t, max_t, size=(n_volumes, 3))
        params[:, 3:] = rng.uniform(-max_r, max_r, size=(n_volumes, 3))
    params[0] = 0.0
    return params


def motion_about_center(params: np.ndarray, center: np.ndarray) -> np.ndarray:
    """(N, 4, 4) head motions: rotation about ``center`` (RAS+ mm, e.g. the brain centroid), then shift."""
    out = np.zeros((len(params), 4, 4))
    shift, back = np.eye(4), np.eye(4)
    shift[:3, 3] = -np.asarray(center)
    back[:3, 3] = np.asarray(center)
    for i, p in enumerate(np.asarray(params, dtype=float)):
        out[i] = back @ matrix_from_params(p) @ shift
    return out


# ------------------------------------------------------------------------------- simulation
@dataclass
class SimulatedSeries:
    """A simulated DWI series with its ground truth."""

    data: np.ndarray
    affine: np.ndarray
    bvals: np.ndarray
    bvecs: np.ndarray  #: FSL b-vectors written to the file (scanner frame)
    head_bvecs: np.ndarray  #: FSL b-vectors in the head (reference) frame: what a correct method outputs
    motions: np.ndarray  #: (N, 4, 4) RAS+ reference → volume transforms (the truth)
    params: np.ndarray  #: (N, 6) motion parameters (about the brain centroid)
    mask: np.ndarray  #: brain mask in the reference frame
    sigma: float  #: standard deviation of the Gaussian noise of each channel
    metadata: dict = field(default_factory=dict)


def rician_noise(signal: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of the signal plus complex Gaussian noise of standard deviation ``sigma``."""
    if sigma <= 0:
        return np.asarray(signal, dtype=np.float32)
    real = signal + rng.normal(scale=sigma, size=signal.shape)
    imag = rng.normal(scale=sigma, size=signal.shape)
    return np.sqrt(real**2 + imag**2).astype(np.float32)


def simulate_series(
    phantom: Phantom,
    *,
    bvals: np.ndarray,
    bvecs_ras: np.ndarray,
    params: np.ndarray,
    snr: float | None = 20.0,
    seed: int = 0,
) -> SimulatedSeries:
    """Synthesize every volume in the head frame, move it, add Rician noise.

    Parameters
    ----------
    phantom : Phantom
    bvals : (N,) array
    bvecs_ras : (N, 3) array
        Scanner-frame gradients (RAS+), as written to the ``.bvec`` file.
    params : (N, 6) array
        Motion parameters (see :func:`motion_pattern`); rotations are about the brain centroid.
    snr : float or None
        Mean b0 signal in the brain divided by the noise ``sigma``; ``None`` for no noise.
    seed : int
        Seed of the noise.
    """
    bvals = np.asarray(bvals, dtype=float)
    bvecs_ras = np.asarray(bvecs_ras, dtype=float)
    params = np.asarray(params, dtype=float)
    if not (len(bvals) == len(bvecs_ras) == len(params)):
        raise ValueError("bvals, bvecs and motion parameters must describe the same number of volumes")
    if bvals[0] > 0:
        raise ValueError("the first volume must be a b0 (it is the reference)")
    rng = np.random.default_rng(seed)
    center = nb.affines.apply_affine(phantom.affine, np.argwhere(phantom.mask)).mean(axis=0)
    motions = motion_about_center(params, center)
    s0 = phantom.s0()
    sigma = float(s0[phantom.mask].mean() / snr) if snr else 0.0
    data = np.zeros((*phantom.shape, len(bvals)), dtype=np.float32)
    head_ras = np.zeros_like(bvecs_ras)
    for i, (bval, g_file, motion) in enumerate(zip(bvals, bvecs_ras, motions, strict=True)):
        rot = motion[:3, :3]
        if bval > 0:
            head_ras[i] = rot.T @ g_file  # what the (rotated) tissue experiences
        clean = phantom.signal(bval, head_ras[i])
        if not np.allclose(motion, np.eye(4)):
            # moved(y) = clean(M⁻¹ y)
            clean = resample_volume(
                clean, phantom.affine, np.linalg.inv(motion), phantom.affine, phantom.shape
            )
        data[..., i] = rician_noise(clean, sigma, rng)
    file_fsl = ras_to_fsl(bvecs_ras, phantom.affine)
    head_fsl = ras_to_fsl(head_ras, phantom.affine)
    file_fsl[bvals <= 0] = 0.0
    head_fsl[bvals <= 0] = 0.0
    return SimulatedSeries(
        data=data,
        affine=phantom.affine,
        bvals=bvals,
        bvecs=file_fsl,
        head_bvecs=head_fsl,
        motions=motions,
        params=params,
        mask=phantom.mask.copy(),
        sigma=sigma,
        metadata={"Phantom": phantom.description, "SNR": snr, "NoiseSigma": sigma, "Seed": seed},
    )


def acquire_slab(series: SimulatedSeries, *, below: int, above: int) -> SimulatedSeries:
    """Cut a simulated series to a slab of slices that the brain fills at both ends.

    Along the grid's third axis, ``below`` slices of brain are left out at the bottom and
    ``above`` at the top (slices of the reference frame's brain mask); world coordinates stay the
    same (the affine's origin moves with the cut).  Simulated on the whole head and cut
    afterwards, moved volumes show the tissue that motion brings into the slab and lose the tissue
    it takes out, as an acquisition does, instead of zeros.  The truth (transforms, head-frame
    b-vectors) is in world coordinates and does not change.
    """
    slices = np.nonzero(series.mask.any(axis=(0, 1)))[0]
    if slices.size == 0:
        raise ValueError("the series has an empty brain mask")
    lo, hi = int(slices[0]) + below, int(slices[-1]) - above + 1
    if hi - lo < 2:
        raise ValueError(f"cutting {below} and {above} slices leaves no slab of brain")
    affine = series.affine.copy()
    affine[:3, 3] = nb.affines.apply_affine(series.affine, [0, 0, lo])
    metadata = {**series.metadata, "Slab": {"below": below, "above": above}}
    return replace(
        series,
        data=np.ascontiguousarray(series.data[:, :, lo:hi]),
        affine=affine,
        mask=series.mask[:, :, lo:hi].copy(),
        metadata=metadata,
    )


# --------------------------------------------------------------------------------- phantoms
def _tensor_from_eig(evals: np.ndarray, evecs: np.ndarray) -> np.ndarray:
    return np.einsum("...ij,...j,...kj->...ik", evecs, evals, evecs)


def _isotropic(shape: tuple[int, ...], diffusivity: float) -> np.ndarray:
    out = np.zeros((*shape, 3, 3))
    out[..., [0, 1, 2], [0, 1, 2]] = diffusivity
    return out


def _world_rotation(affine: np.ndarray) -> np.ndarray:
    u, _, vt = np.linalg.svd(np.asarray(affine)[:3, :3])
    return u @ vt


def _fibre_orientations(wm: np.ndarray, affine: np.ndarray, sigma: float = 1.5) -> np.ndarray:
    """Plausible fibre directions (RAS+) from the white-matter map.

    White-matter tracts are elongated structures: the WM probability changes fastest across a
    tract and slowest along it, so the eigenvector of the smallest eigenvalue of the local
    structure tensor (smoothed outer product of the gradient) is taken as the fibre direction.
    """
    grads = np.stack(np.gradient(ndi.gaussian_filter(wm.astype(float), 1.0)), axis=-1)
    st = np.einsum("...i,...j->...ij", grads, grads)
    for i in range(3):
        for j in range(i, 3):
            st[..., i, j] = ndi.gaussian_filter(st[..., i, j], sigma)
            st[..., j, i] = st[..., i, j]
    st += 1e-12 * np.eye(3)
    _, evecs = np.linalg.eigh(st)
    vox_dir = evecs[..., :, 0]  # smallest eigenvalue, voxel axes
    world = vox_dir @ _world_rotation(affine).T
    return world / np.linalg.norm(world, axis=-1, keepdims=True)


def _orthonormal_frame(e1: np.ndarray) -> np.ndarray:
    """(…, 3, 3) eigenvector matrices with ``e1`` as first column."""
    helper = np.where(np.abs(e1[..., :1]) < 0.9, np.array([1.0, 0, 0]), np.array([0, 1.0, 0]))
    e2 = np.cross(e1, helper)
    e2 /= np.linalg.norm(e2, axis=-1, keepdims=True)
    e3 = np.cross(e1, e2)
    return np.stack([e1, e2, e3], axis=-1)


def mni_phantom(*, resolution: float = 2.0, crop: bool = True, margin: int = 4) -> Phantom:
    """Whole-brain phantom from nilearn's bundled MNI152 maps (no download).

    Compartments (volume fractions from the GM/WM probability maps, CSF the rest of the brain
    mask): white matter with an axially symmetric tensor (λ∥ = 1.7, λ⊥ = 0.3 µm²/ms, K = 1.0)
    along :func:`_fibre_orientations`; isotropic grey matter (0.8 µm²/ms, K = 0.6); isotropic,
    free-water CSF (3.0 µm²/ms, K = 0).  b0 (T2-like) signals: WM 800, GM 1000, CSF 2000;
    the non-brain head (scalp) signal is taken from the T1 template scaled to ~300.

    Parameters
    ----------
    resolution : float
        Voxel size in mm: 2 uses the 2 mm templates as is; other values resample them.
    crop : bool
        Crop the grid to the head's bounding box plus ``margin`` voxels.
    """
    from nilearn import datasets, image

    t1 = datasets.load_mni152_template(resolution=2)
    gm = datasets.load_mni152_gm_template(resolution=2)
    wm = datasets.load_mni152_wm_template(resolution=2)
    brain = datasets.load_mni152_brain_mask(resolution=2)
    if abs(resolution - 2.0) > 1e-3:
        target = np.diag([resolution] * 3 + [1.0])
        target[:3, 3] = t1.affine[:3, 3]
        t1, gm, wm = (
            image.resample_img(
                im, target_affine=target, interpolation="continuous", force_resample=True, copy_header=True
            )
            for im in (t1, gm, wm)
        )
        brain = image.resample_to_img(
            brain, t1, interpolation="nearest", force_resample=True, copy_header=True
        )
    affine = t1.affine.copy()
    t1d = np.clip(t1.get_fdata(), 0, None)
    gmd = np.clip(gm.get_fdata(), 0, 1)
    wmd = np.clip(wm.get_fdata(), 0, 1)
    mask = ndi.binary_fill_holes(brain.get_fdata() > 0.5) | ((gmd + wmd) > 0.5)
    total = np.clip(gmd + wmd, 1e-6, None)
    scale = np.where(total > 1, 1 / total, 1.0)
    gmd, wmd = gmd * scale * mask, wmd * scale * mask
    csf = np.where(mask, np.clip(1 - gmd - wmd, 0, 1), 0.0)
    head = (t1d > 0.1 * t1d.max()) & ~mask
    scalp = np.where(head, t1d / t1d[head].mean() * 300.0 if head.any() else 0.0, 0.0)
    if crop:
        ijk = np.argwhere(mask | head)
        lo = np.maximum(ijk.min(0) - margin, 0)
        hi = np.minimum(ijk.max(0) + margin + 1, mask.shape)
        sl = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        gmd, wmd, csf, scalp, mask = (a[sl] for a in (gmd, wmd, csf, scalp, mask))
        affine = affine.copy()
        affine[:3, 3] = nb.affines.apply_affine(t1.affine, lo)
    shape = mask.shape
    e1 = _fibre_orientations(wmd, affine)
    wm_tensor = _tensor_from_eig(
        np.broadcast_to([1.7e-3, 0.3e-3, 0.3e-3], (*shape, 3)), _orthonormal_frame(e1)
    )
    comps = [
        Compartment(s0=800.0 * wmd, tensor=wm_tensor, kurtosis=1.0),
        Compartment(s0=1000.0 * gmd, tensor=_isotropic(shape, 0.8e-3), kurtosis=0.6),
        Compartment(s0=2000.0 * csf, tensor=_isotropic(shape, 3.0e-3), kurtosis=0.0),
        Compartment(s0=scalp, tensor=_isotropic(shape, 1.0e-3), kurtosis=0.5),
    ]
    return Phantom(
        affine=affine,
        compartments=comps,
        mask=mask.astype(bool),
        description=f"MNI152 (nilearn) GM/WM/CSF phantom at {resolution:g} mm",
    )


def real_data_phantom(
    dwi_file: str | Path | list,
    bval_file: str | Path | list,
    bvec_file: str | Path | list,
    *,
    kurtosis: float = DEFAULT_KURTOSIS,
    b0_threshold: float = 50.0,
    align_b0: Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray] | None = None,
) -> Phantom:
    """Phantom fitted to real (single- or multi-shell) DWI series, e.g. ds-xa30 (b=2500).

    A tensor is fitted to the apparent diffusivities, after converting them to the diffusivities
    of the Gamma-distribution signal of :func:`signal_attenuation` with a fixed kurtosis
    ``kurtosis`` (the data have a single shell, so the kurtosis cannot be estimated): the
    measured signal at the acquired b-value is reproduced, and lower and higher b-values are
    extrapolated with that kurtosis.  CSF-like voxels (mean diffusivity above 2.0 µm²/ms) get
    ``K = 0``.  Tensors are clipped to be positive semi-definite with eigenvalues ≤ 3.5 µm²/ms.
    The b0 map is the average of the b0 volumes; the mask is DIPY's ``median_otsu``.

    Several runs on the same grid (lists of files) are fitted together, each normalised by its
    own b0.  Pass both phase-encoding directions (e.g. ds-xa30's dir-AP and dir-PA): the raw data
    carry eddy-current displacements along the phase-encoding axis that depend on the gradient;
    they have opposite signs in the two runs and mostly cancel in the joint fit.  Fitted to one run
    only, they are baked into the tensors and the synthesized volumes look shifted by up to ~1 mm
    along that axis depending on the gradient, which no rigid motion correction can (or should)
    remove.

    The b0 and the diffusion-weighted volumes of a real run are not in one geometry either: the
    head moves between them and the eddy-current shifts of the diffusion-weighted volumes do not
    average to zero.  A phantom that takes its b0 map from the real b0 and its diffusivities from
    the real diffusion-weighted volumes inherits that offset, and every synthesized volume carries
    part of it (more at higher b).  ``align_b0(fixed, moving, mask, affine)`` removes it: it must
    return the RAS+ reference-to-moving transform registering ``moving`` (a run's mean b0) to
    ``fixed`` (the same run's mean diffusion-weighted volume); each run's b0 is resampled with it
    before the fit, so the b0 and diffusivity maps share the diffusion-weighted volumes' frame.
    (This module runs no registration itself; ``benchmarks/run_benchmark.py`` passes ANTs.)
    """
    from dipy.segment.mask import median_otsu

    from dmriprep_motion.gradients import load_gradient_table

    def as_list(x):
        return [x] if isinstance(x, str | Path) else list(x)

    s0s, apparents, gs, bvals_all = [], [], [], []
    for dwi, bval, bvec in zip(as_list(dwi_file), as_list(bval_file), as_list(bvec_file), strict=True):
        img = nb.load(str(dwi))
        data = np.asanyarray(img.dataobj, dtype=np.float32)
        table = load_gradient_table(bval, bvec, data.shape[-1], b0_threshold=b0_threshold)
        s0_run = data[..., table.b0_mask].mean(-1)
        dwi_idx = table.dwi_indices
        if align_b0 is not None:
            _, run_mask = median_otsu(s0_run, median_radius=2, numpass=2)
            xfm = align_b0(data[..., dwi_idx].mean(-1), s0_run, run_mask, img.affine)
            s0_run = resample_volume(s0_run, img.affine, xfm, img.affine, s0_run.shape)
        safe_s0 = np.maximum(s0_run, 1e-3)[..., None]
        atten = np.clip(data[..., dwi_idx] / safe_s0, 1e-4, 1.0)
        apparents.append(-np.log(atten) / table.bvals[dwi_idx])
        gs.append(fsl_to_ras(table.bvecs[dwi_idx], img.affine))
        bvals_all.append(table.bvals[dwi_idx])
        s0s.append(s0_run)
    s0 = np.mean(s0s, axis=0)
    apparent = np.concatenate(apparents, axis=-1)
    g = np.concatenate(gs)
    bvals = np.concatenate(bvals_all)
    _, mask = median_otsu(s0, median_radius=2, numpass=2)
    mask = ndi.binary_fill_holes(mask)
    design = np.stack(
        [
            g[:, 0] ** 2,
            g[:, 1] ** 2,
            g[:, 2] ** 2,
            2 * g[:, 0] * g[:, 1],
            2 * g[:, 0] * g[:, 2],
            2 * g[:, 1] * g[:, 2],
        ],
        axis=1,
    )
    pinv = np.linalg.pinv(design)

    def fit(adc: np.ndarray) -> np.ndarray:
        coef = adc @ pinv.T
        t = np.empty((*coef.shape[:-1], 3, 3))
        idx = [(0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2)]
        for c, (i, j) in enumerate(idx):
            t[..., i, j] = t[..., j, i] = coef[..., c]
        return t

    tensor_app = fit(apparent)
    md_app = np.trace(tensor_app, axis1=-2, axis2=-1) / 3
    kmap = np.where(md_app > 2.0e-3, 0.0, kurtosis)
    dtrue = np.where(
        kmap[..., None] > 0, true_diffusivity(apparent, float(np.median(bvals)), kurtosis), apparent
    )
    tensor = fit(dtrue)
    evals, evecs = np.linalg.eigh(tensor)
    evals = np.clip(evals, 0.0, 3.5e-3)
    tensor = _tensor_from_eig(evals, evecs)
    s0_map = np.where(mask | (s0 > 0), s0, 0.0).astype(float)
    return Phantom(
        affine=img.affine.copy(),
        compartments=[Compartment(s0=s0_map, tensor=tensor, kurtosis=kmap)],
        mask=mask.astype(bool),
        description=f"tensor + fixed kurtosis (K={kurtosis:g}) fit of "
        + ", ".join(Path(f).name for f in as_list(dwi_file))
        + ("" if align_b0 is None else " (b0 aligned to the mean diffusion-weighted volume)"),
    )


# ------------------------------------------------------------------------------------- BIDS
def write_bids(
    series: SimulatedSeries,
    bids_dir: str | Path,
    *,
    subject: str = "01",
    acquisition: str | None = None,
    name: str = "dmriprep_motion simulation",
) -> dict[str, Path]:
    """Write a simulated series as a BIDS dataset plus its ground truth.

    Files: ``dataset_description.json`` and ``sub-<label>/dwi/sub-<label>[_acq-<a>]_dwi``
    ``.nii.gz/.bval/.bvec/.json``; the truth goes to ``derivatives/truth/sub-<label>/dwi/``:
    ``*_from-orig_to-dwiref_mode-image_desc-truth_xfm.txt`` (ITK, RAS+ reference → volume, as the
    outputs of dmriprep-motion), the same as ``*_desc-truth_xfm.npy`` (N, 4, 4) and
    ``*_desc-truth_motion.npy`` (N, 6), ``*_desc-headframe_dwi.bvec`` (the b-vectors a correct
    method writes) and ``*_desc-brain_mask.nii.gz`` (reference frame).

    Returns
    -------
    dict
        Paths keyed by ``dwi``, ``bval``, ``bvec``, ``xfm``, ``xfm_npy``, ``params``,
        ``head_bvec``, ``mask``.
    """
    bids_dir = Path(bids_dir)
    stem = f"sub-{subject}" + (f"_acq-{acquisition}" if acquisition else "")
    dwi_dir = bids_dir / f"sub-{subject}" / "dwi"
    truth_dir = bids_dir / "derivatives" / "truth" / f"sub-{subject}" / "dwi"
    dwi_dir.mkdir(parents=True, exist_ok=True)
    truth_dir.mkdir(parents=True, exist_ok=True)
    description = {
        "Name": name,
        "BIDSVersion": "1.9.0",
        "DatasetType": "raw",
        "GeneratedBy": [{"Name": "dmriprep_motion.testing.simulate"}],
    }
    (bids_dir / "dataset_description.json").write_text(json.dumps(description, indent=2) + "\n")
    truth_desc = {
        "Name": "ground truth",
        "BIDSVersion": "1.9.0",
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "dmriprep_motion.testing.simulate"}],
    }
    (bids_dir / "derivatives" / "truth" / "dataset_description.json").write_text(
        json.dumps(truth_desc) + "\n"
    )
    paths = {
        "dwi": dwi_dir / f"{stem}_dwi.nii.gz",
        "bval": dwi_dir / f"{stem}_dwi.bval",
        "bvec": dwi_dir / f"{stem}_dwi.bvec",
        "sidecar": dwi_dir / f"{stem}_dwi.json",
        "xfm": truth_dir / f"{stem}_from-orig_to-dwiref_mode-image_desc-truth_xfm.txt",
        "xfm_npy": truth_dir / f"{stem}_desc-truth_xfm.npy",
        "params": truth_dir / f"{stem}_desc-truth_motion.npy",
        "head_bvec": truth_dir / f"{stem}_desc-headframe_dwi.bvec",
        "mask": truth_dir / f"{stem}_desc-brain_mask.nii.gz",
    }
    img = nb.Nifti1Image(series.data.astype(np.float32), series.affine)
    img.header.set_xyzt_units("mm", "sec")
    img.to_filename(paths["dwi"])
    write_fsl(series.bvals, series.bvecs, paths["bval"], paths["bvec"])
    sidecar = {
        "PhaseEncodingDirection": "j-",
        "TotalReadoutTime": 0.05,
        "RepetitionTime": 3.0,
        "Simulation": series.metadata,
    }
    paths["sidecar"].write_text(json.dumps(sidecar, indent=2, default=float) + "\n")
    write_itk(paths["xfm"], series.motions)
    np.save(paths["xfm_npy"], series.motions)
    np.save(paths["params"], series.params)
    write_fsl(
        series.bvals, series.head_bvecs, truth_dir / f"{stem}_desc-headframe_dwi.bval", paths["head_bvec"]
    )
    nb.Nifti1Image(series.mask.astype(np.uint8), series.affine).to_filename(paths["mask"])
    return paths


def load_truth(paths_or_dir: str | Path, *, subject: str = "01", acquisition: str | None = None) -> dict:
    """Read the ground truth written by :func:`write_bids` (``bids_dir`` or its ``paths`` dict)."""
    bids_dir = Path(paths_or_dir)
    stem = f"sub-{subject}" + (f"_acq-{acquisition}" if acquisition else "")
    truth_dir = bids_dir / "derivatives" / "truth" / f"sub-{subject}" / "dwi"
    from dmriprep_motion.gradients import read_bvals, read_bvecs

    return {
        "xfm": np.load(truth_dir / f"{stem}_desc-truth_xfm.npy"),
        "bvals": read_bvals(truth_dir / f"{stem}_desc-headframe_dwi.bval"),
        "params": np.load(truth_dir / f"{stem}_desc-truth_motion.npy"),
        "head_bvecs": read_bvecs(truth_dir / f"{stem}_desc-headframe_dwi.bvec"),
        "mask": nb.load(truth_dir / f"{stem}_desc-brain_mask.nii.gz"),
        "stem": stem,
    }
