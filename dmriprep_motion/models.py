"""Leave-one-volume-out signal models.

Pure NumPy/DIPY; no Nipype.  Every model exposes one operation::

    model.predict(data, bvals, bvecs, target, train=None) -> (V,) array

``data`` is a (V, N) matrix of brain voxels by volumes (already moved into the
reference frame by the previous pass), ``bvecs`` are the b-vectors in that same
frame, and the prediction is the signal expected for volume ``target``.  The
target volume never enters its own fit: its column is removed before anything
(including hyper-parameters) is estimated.  ``train`` optionally removes more
volumes (e.g. outliers) from the fit.
"""

from __future__ import annotations

import logging
import warnings
from abc import ABC, abstractmethod

import numpy as np

from dmriprep_motion.gradients import shell_labels

LOGGER = logging.getLogger("dmriprep_motion.models")

#: Voxels processed at once by DIPY fits, to bound memory on large series.
CHUNK_VOXELS = 40_000

MODEL_NAMES = ("b0", "avgdwi", "dti", "dki", "gp")

#: Gradient directions closer than this angle (degrees, either sign) count as one direction.
SAME_DIRECTION_DEG = 2.0


class ModelError(ValueError):
    """The data cannot support the requested model (a user error)."""


def direction_groups(bvecs: np.ndarray, tolerance_deg: float = SAME_DIRECTION_DEG) -> np.ndarray:
    """Label the gradient directions, one label per distinct direction.

    Directions are antipodally symmetric (``g`` and ``-g`` are the same
    direction) and two directions closer than ``tolerance_deg`` are the same.
    Vectors that are not (close to) unit length, such as the zero vectors of b0
    volumes, have no direction and get the label -1.

    Parameters
    ----------
    bvecs : (N, 3) array
        Gradient directions.
    tolerance_deg : float
        Largest angle between two vectors counted as the same direction.

    Returns
    -------
    (N,) int array
        0, 1, … in order of first appearance; -1 for vectors without a direction.
    """
    bvecs = np.asarray(bvecs, dtype=float).reshape(-1, 3)
    labels = np.full(bvecs.shape[0], -1, dtype=int)
    norms = np.linalg.norm(bvecs, axis=1)
    cos_tol = np.cos(np.deg2rad(tolerance_deg))
    reps: list[np.ndarray] = []
    for i in np.flatnonzero(np.isfinite(norms) & (norms > 0.5)):
        vec = bvecs[i] / norms[i]
        if reps:
            close = np.flatnonzero(np.abs(np.asarray(reps) @ vec) >= cos_tol)
            if close.size:
                labels[i] = int(close[0])
                continue
        labels[i] = len(reps)
        reps.append(vec)
    return labels


def leave_one_out_directions(labels: np.ndarray) -> tuple[int, int]:
    """Distinct directions in a scheme, and the fewest left when one volume is left out.

    Parameters
    ----------
    labels : (N,) int array
        Output of :func:`direction_groups` (-1 entries are ignored).

    Returns
    -------
    distinct : int
        Number of distinct directions.
    left : int
        ``distinct`` minus one if some direction was acquired only once (leaving
        that volume out removes the direction from the fit).
    """
    labels = np.asarray(labels)
    counts = np.bincount(labels[labels >= 0]) if (labels >= 0).any() else np.zeros(0, dtype=int)
    distinct = int((counts > 0).sum())
    return distinct, distinct - int((counts == 1).any())


def _snapped(bvecs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Every vector replaced by the first vector of its direction group (unit length)."""
    out = np.zeros_like(np.asarray(bvecs, dtype=float))
    for label in np.unique(labels[labels >= 0]):
        members = np.flatnonzero(labels == label)
        first = bvecs[members[0]]
        out[members] = first / np.linalg.norm(first)
    return out


def leave_one_out_full_rank(design: np.ndarray, targets: np.ndarray) -> bool:
    """Whether ``design`` keeps full column rank when any one of the ``targets`` rows is removed.

    Only a row with a large leverage (diagonal of the hat matrix; the leverages sum
    to the rank) can carry a dimension alone, so the rank is recomputed without each
    such row only.  Columns are scaled to unit norm first: the rank does not change,
    and the default tolerance becomes meaningful for columns of very different scales.

    Parameters
    ----------
    design : (N, P) array
        Design matrix, one row per volume.
    targets : (N,) bool array
        Rows that may be left out (the diffusion-weighted volumes).
    """
    design = np.asarray(design, dtype=float)
    n_cols = design.shape[1]
    scale = np.linalg.norm(design, axis=0)
    if design.shape[0] <= n_cols or not np.all(np.isfinite(design)) or np.any(scale == 0):
        return False
    design = design / scale
    if np.linalg.matrix_rank(design) < n_cols:
        return False
    u = np.linalg.svd(design, full_matrices=False)[0]
    leverage = (u**2).sum(axis=1)
    for row in np.flatnonzero(np.asarray(targets, dtype=bool) & (leverage > 0.5)):
        if np.linalg.matrix_rank(np.delete(design, row, axis=0)) < n_cols:
            return False
    return True


def _train_mask(n_volumes: int, target: int, train: np.ndarray | None) -> np.ndarray:
    mask = np.ones(n_volumes, dtype=bool) if train is None else np.asarray(train, dtype=bool).copy()
    if mask.shape != (n_volumes,):
        raise ValueError("train must be a boolean vector with one entry per volume")
    mask[target] = False
    return mask


def _finalize(pred: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    pred = np.asarray(pred, dtype=np.float64)
    bad = ~np.isfinite(pred)
    if bad.any():
        pred[bad] = fallback[bad]
    return np.clip(pred, 0.0, None).astype(np.float32)


class LeaveOneOutModel(ABC):
    """A diffusion signal model fit without the volume it predicts."""

    name: str = ""

    def __init__(self, b0_threshold: float = 50.0) -> None:
        self.b0_threshold = b0_threshold

    def check(self, bvals: np.ndarray, bvecs: np.ndarray) -> None:  # noqa: B027
        """Raise :class:`ModelError` if the gradient scheme cannot support the model.

        Parameters
        ----------
        bvals : (N,) array
        bvecs : (N, 3) array
            The real b-vectors (zeros for b0s): repeated or collinear directions
            count once.
        """

    def _check_directions(self, bvals: np.ndarray, bvecs: np.ndarray, needed: int) -> None:
        """Refuse a scheme with fewer than ``needed`` distinct directions in some leave-one-out fit."""
        bvals = np.asarray(bvals, dtype=float)
        bvecs = np.asarray(bvecs, dtype=float).reshape(-1, 3)
        if bvecs.shape[0] != bvals.size:
            raise ValueError("bvals and bvecs must have one entry per volume")
        dwi = bvals > self.b0_threshold
        distinct, left = leave_one_out_directions(direction_groups(bvecs[dwi]))
        if left < needed:
            raise ModelError(
                f"model '{self.name}' needs at least {needed + 1} distinct gradient directions, "
                f"or {needed} each acquired twice (found {distinct} distinct directions in "
                f"{int(dwi.sum())} diffusion-weighted volumes); try --model avgdwi or b0"
            )

    @abstractmethod
    def _predict(
        self, data: np.ndarray, bvals: np.ndarray, bvecs: np.ndarray, target: int, train: np.ndarray
    ) -> np.ndarray:
        """Predict column ``target`` from the columns selected by ``train``."""

    def predict(
        self,
        data: np.ndarray,
        bvals: np.ndarray,
        bvecs: np.ndarray,
        target: int,
        train: np.ndarray | None = None,
    ) -> np.ndarray:
        """Predict volume ``target`` from the other volumes.

        Parameters
        ----------
        data : (V, N) array
            Signal of V brain voxels in N volumes.
        bvals : (N,) array
        bvecs : (N, 3) array
            Unit b-vectors in the frame of ``data`` (zeros for b0s).
        target : int
            Index of the volume to predict; its column is never used.
        train : (N,) bool array, optional
            Volumes allowed in the fit (the target is always excluded).

        Returns
        -------
        (V,) float32 array, non-negative.
        """
        data = np.asarray(data)
        bvals = np.asarray(bvals, dtype=float)
        bvecs = np.asarray(bvecs, dtype=float)
        mask = _train_mask(data.shape[1], int(target), train)
        return self._predict(data, bvals, bvecs, int(target), mask)

    def _b0_columns(self, bvals: np.ndarray, train: np.ndarray) -> np.ndarray:
        """The training volumes that are b0s (bool mask)."""
        return train & (bvals <= self.b0_threshold)

    def _b0_mean(self, data: np.ndarray, bvals: np.ndarray, train: np.ndarray) -> np.ndarray:
        sel = self._b0_columns(bvals, train)
        if not sel.any():
            raise ModelError("no b0 volume is available to fit the model")
        return data[:, sel].mean(axis=1, dtype=np.float64)

    def _shell_mean(self, data: np.ndarray, bvals: np.ndarray, target: int, train: np.ndarray) -> np.ndarray:
        labels = shell_labels(bvals, self.b0_threshold)
        sel = train & (labels == labels[target])
        if not sel.any():
            sel = train & (labels > 0)
        if not sel.any():
            return self._b0_mean(data, bvals, train)
        return data[:, sel].mean(axis=1, dtype=np.float64)


class B0Model(LeaveOneOutModel):
    """Predict every volume as the average b0 (registration to the b0 reference)."""

    name = "b0"

    def _predict(self, data, bvals, bvecs, target, train):
        b0 = self._b0_mean(data, bvals, train)
        return _finalize(b0, b0)


class AverageDWIModel(LeaveOneOutModel):
    """Predict a volume as the average of the other volumes of its shell."""

    name = "avgdwi"

    def _predict(self, data, bvals, bvecs, target, train):
        mean = self._shell_mean(data, bvals, target, train)
        return _finalize(mean, mean)


def _gtab(bvals: np.ndarray, bvecs: np.ndarray, b0_threshold: float):
    from dipy.core.gradients import gradient_table

    return gradient_table(np.asarray(bvals, float), bvecs=np.asarray(bvecs, float), b0_threshold=b0_threshold)


class _DipyModel(LeaveOneOutModel):
    """Shared machinery for DIPY reconstruction models (DTI, DKI)."""

    min_directions = 6
    min_shells = 1

    def __init__(self, b0_threshold: float = 50.0, fit_method: str = "OLS") -> None:
        super().__init__(b0_threshold)
        self.fit_method = fit_method

    def check(self, bvals, bvecs):
        """Distinct directions, shells, and a design of full rank in every leave-one-out fit."""
        bvals = np.asarray(bvals, dtype=float)
        bvecs = np.asarray(bvecs, dtype=float).reshape(-1, 3)
        # The target is left out, so the fit may see one direction fewer.
        self._check_directions(bvals, bvecs, self.min_directions)
        n_shells = int(shell_labels(bvals, self.b0_threshold).max())
        if n_shells < self.min_shells:
            raise ModelError(
                f"model '{self.name}' needs at least {self.min_shells} non-zero b-value shells "
                f"(found {n_shells}); use --model dti or gp for single-shell data"
            )
        dwi = bvals > self.b0_threshold
        labels = np.full(bvals.size, -1)
        labels[dwi] = direction_groups(bvecs[dwi])
        design = self._design(_gtab(bvals, _snapped(bvecs, labels), self.b0_threshold))
        if not leave_one_out_full_rank(design, dwi):
            raise ModelError(
                f"model '{self.name}' cannot be fit leaving one volume out: its "
                f"{leave_one_out_directions(labels)[0]} distinct gradient directions and "
                f"{n_shells} shell(s) do not determine it (e.g. directions in one plane, or no b0); "
                "try --model gp, avgdwi or b0"
            )

    def _check_training(self, bvals: np.ndarray) -> None:
        """The volumes left for one fit (after outliers were excluded) are still enough.

        Volumes are counted, not directions: the scheme's directions were checked before
        the run (:meth:`check`, on the scanner b-vectors); the b-vectors seen here are
        rotated by the motion estimates, which must not change the verdict mid-run.
        """
        n_dwi = int((bvals > self.b0_threshold).sum())
        if n_dwi < self.min_directions:
            raise ModelError(
                f"model '{self.name}' needs at least {self.min_directions} diffusion-weighted volumes "
                f"in each fit; {n_dwi} are left once excluded volumes are removed"
            )
        if int(shell_labels(bvals, self.b0_threshold).max()) < self.min_shells:
            raise ModelError(
                f"model '{self.name}' needs at least {self.min_shells} non-zero b-value shells in each fit"
            )

    @abstractmethod
    def _model(self, gtab):
        """Build the DIPY model for a gradient table."""

    @abstractmethod
    def _design(self, gtab) -> np.ndarray:
        """DIPY's design matrix of the log-signal (one row per volume)."""

    def _predict(self, data, bvals, bvecs, target, train):
        self._check_training(bvals[train])
        fallback = self._shell_mean(data, bvals, target, train)
        if self.fit_method == "OLS":
            return self._predict_closed_form(data, bvals, bvecs, target, train, fallback)
        return self._predict_dipy(data, bvals, bvecs, target, train, fallback)

    def _predict_closed_form(self, data, bvals, bvecs, target, train, fallback):
        """Least squares on the log-signal: the prediction is one fixed combination of the rows.

        With design ``X`` and training rows ``T``, the fitted log-signal of the target is
        ``X[target] @ pinv(X[T]) @ log S[T]``: a weight per training volume, the same for every
        voxel (a row of the hat matrix), so the cost is one small pseudo-inverse per target.
        """
        design = self._design(_gtab(bvals, bvecs, self.b0_threshold))
        rows = np.flatnonzero(train)
        weights = design[target] @ np.linalg.pinv(design[rows])
        signal = np.asarray(data[:, rows], dtype=np.float64)
        floor = max(1e-3 * float(signal.mean()), np.finfo(np.float32).tiny)
        with np.errstate(all="ignore"):
            pred = np.exp(np.log(np.maximum(signal, floor)) @ weights)
        # A voxel whose log-linear fit extrapolates wildly keeps the range of its own signal.
        return _finalize(np.minimum(pred, 1.5 * signal.max(axis=1)), fallback)

    def _predict_dipy(self, data, bvals, bvecs, target, train, fallback):
        """DIPY's (iterative) fit on the training volumes, chunk by chunk."""
        train_gtab = _gtab(bvals[train], bvecs[train], self.b0_threshold)
        target_gtab = _gtab(bvals[[target]], bvecs[[target]], self.b0_threshold)
        model = self._model(train_gtab)
        out = np.empty(data.shape[0], dtype=np.float64)
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            for start in range(0, data.shape[0], CHUNK_VOXELS):
                chunk = np.asarray(data[start : start + CHUNK_VOXELS][:, train], dtype=np.float64)
                fit = model.fit(chunk)
                s0 = getattr(fit, "S0_hat", None)
                if s0 is None:
                    s0 = chunk[:, bvals[train] <= self.b0_threshold].mean(axis=1)
                out[start : start + chunk.shape[0]] = np.asarray(fit.predict(target_gtab, S0=s0))[..., 0]
        return _finalize(out, fallback)


class DTIModel(_DipyModel):
    """Diffusion tensor: log-linear least squares in closed form (DIPY's WLS with ``fit_method="WLS"``)."""

    name = "dti"
    min_directions = 6

    def _design(self, gtab):
        from dipy.reconst.dti import design_matrix

        return design_matrix(gtab)

    def _model(self, gtab):
        from dipy.reconst.dti import TensorModel

        return TensorModel(gtab, fit_method=self.fit_method, return_S0_hat=True)


class DKIModel(_DipyModel):
    """Diffusion kurtosis, log-linear least squares in closed form; multi-shell only."""

    name = "dki"
    min_directions = 15
    min_shells = 2

    def _design(self, gtab):
        from dipy.reconst.dki import design_matrix

        return design_matrix(gtab)

    def _model(self, gtab):
        from dipy.reconst.dki import DiffusionKurtosisModel

        return DiffusionKurtosisModel(gtab, fit_method=self.fit_method, return_S0_hat=True)


def spherical_kernel(theta: np.ndarray, a: float) -> np.ndarray:
    """Spherical covariance ``1 - 3θ/2a + θ³/2a³`` (0 beyond ``a``)."""
    x = np.clip(theta / a, 0.0, 1.0)
    return 1.0 - 1.5 * x + 0.5 * x**3


class GPModel(LeaveOneOutModel):
    """Gaussian process on the sphere and b-value, in the spirit of FSL eddy.

    The signal of each voxel, divided by the mean of its shell, is a zero-mean
    Gaussian process over gradient directions (antipodally symmetric spherical
    covariance of the angle between directions) and b-values (squared
    exponential in log b).  Because the covariance depends only on the gradient
    table, the prediction is the same linear combination of the training
    volumes for every voxel: the model costs one small matrix solve per target.

    Hyper-parameters (angular range ``a``, noise-to-signal ratio ``λ`` and,
    with several shells, the log-b length scale) are chosen by minimising the
    closed-form leave-one-out error on a random subsample of voxels, using only
    the training volumes.

    Free water has no directional signal.  In voxels whose apparent diffusivity (from the b0
    and the lowest shell's mean) is free-water-like, the directional part of the prediction
    is tapered off: kept whole below ``free_water[0]``, none of it above ``free_water[1]``
    (mm²/s), linearly in between; there the prediction is the shell's mean.  Directional
    variation in those voxels (CSF and its partial volumes, along the brain's strongest
    edges) is noise or motion, and a model that fits it hides that motion from the
    registration (``benchmarks/README.md``, 2026-12-05).  ``free_water=None`` keeps every
    voxel's directional part.
    """

    name = "gp"
    angles = np.array([0.3, 0.45, 0.6, 0.8, 1.0, 1.25, 1.6, 2.2, 3.0])
    ratios = np.logspace(-2.5, 1.0, 8)
    log_b_scales = np.array([0.3, 0.7, 1.5])
    min_directions = 3

    #: Apparent diffusivities (mm²/s) where the directional part starts and ends being tapered
    free_water_adc = (1.5e-3, 2.5e-3)

    def __init__(
        self,
        b0_threshold: float = 50.0,
        n_voxels: int = 1000,
        seed: int = 0,
        free_water: tuple[float, float] | None = free_water_adc,
    ) -> None:
        super().__init__(b0_threshold)
        self.n_voxels = n_voxels
        self.seed = seed
        self.free_water = free_water
        self.hyperparameters: dict[str, float] = {}

    def check(self, bvals, bvecs):
        """Enough distinct directions to predict each one from others."""
        self._check_directions(bvals, bvecs, self.min_directions)

    @staticmethod
    def _angles(bvecs: np.ndarray) -> np.ndarray:
        return np.arccos(np.clip(np.abs(bvecs @ bvecs.T), 0.0, 1.0))

    @staticmethod
    def _shell_products(
        data: np.ndarray, cols: np.ndarray, shell_of: np.ndarray, n_shells: int, weights: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per shell, the sum and the weighted sum of the columns ``cols`` of ``data``.

        ``shell_of`` gives each column's shell (0 to ``n_shells`` - 1).  One float32 product
        over the series, (V, N) @ (N, 2 × shells), instead of a float64 copy of every training
        column: with 120 volumes that copy took most of the model's time.
        """
        mix = np.zeros((data.shape[1], 2 * n_shells), dtype=np.float32)
        mix[cols, shell_of] = 1.0
        mix[cols, n_shells + shell_of] = weights
        products = (np.asarray(data, dtype=np.float32) @ mix).astype(np.float64)
        return products[:, :n_shells], products[:, n_shells:]

    def _kernel(self, theta, logb, a, scale):
        k = spherical_kernel(theta, a)
        if scale is not None:
            k = k * np.exp(-((logb[:, None] - logb[None, :]) ** 2) / (2 * scale**2))
        return k

    def _select(self, theta, logb, sample, multi):
        # The closed-form leave-one-out residuals of voxel v are (r_v K⁻¹)_j / (K⁻¹)_jj with
        # K = kernel + λI; their mean square over voxels only needs the Gram matrix G = RᵀR of
        # the sampled residuals: Σ_v (r_v K⁻¹)_j² = (K⁻¹ G K⁻¹)_jj.  Computing G once makes
        # each of the grid's candidates cost n×n products instead of a voxels×n×n one.  One
        # eigendecomposition of each kernel, V M Vᵀ, serves all its λ: K⁻¹ = V (M + λ)⁻¹ Vᵀ, so
        # diag(K⁻¹ G K⁻¹) = diag(S H Sᵀ) with S = V (M + λ)⁻¹ and H = Vᵀ G V, and
        # diag(K⁻¹) = (V∘V)(M + λ)⁻¹: one product per λ instead of an inverse and two products
        # (the same choices on 207 targets of three benchmark series; 1.6x faster with 60
        # volumes per shell).
        best = (np.inf, None)
        gram = sample.T @ sample
        for scale in self.log_b_scales if multi else [None]:
            for a in self.angles:
                eigvals, vecs = np.linalg.eigh(self._kernel(theta, logb, a, scale))
                rotated = vecs.T @ gram @ vecs
                squares = vecs**2
                for lam in self.ratios:
                    inverse = 1.0 / (eigvals + lam)
                    scaled = vecs * inverse
                    sums = np.einsum("ij,ij->i", scaled @ rotated, scaled)  # diag(K⁻¹ G K⁻¹)
                    err = float(np.sum(sums / (squares @ inverse) ** 2)) / sample.size
                    if err < best[0]:
                        best = (err, (a, lam, scale))
        return best[1]

    def _predict(self, data, bvals, bvecs, target, train):
        # Volumes, not directions, as for DTI/DKI (see _DipyModel._check_training).
        if (bvals > self.b0_threshold).sum() - 1 < self.min_directions:
            raise ModelError(
                f"model 'gp' needs at least {self.min_directions + 1} diffusion-weighted volumes"
            )
        labels = shell_labels(bvals, self.b0_threshold)
        if labels[target] == 0:  # b0 target: the average b0 is the GP's limit
            b0 = self._b0_mean(data, bvals, train)
            return _finalize(b0, b0)
        cols = np.flatnonzero(train & (labels > 0))
        shells = np.unique(labels[cols])
        if labels[target] not in shells or cols.size < self.min_directions:
            mean = self._shell_mean(data, bvals, target, train)
            return _finalize(mean, mean)
        # Each training volume, divided by the mean of its shell's training volumes, minus 1:
        # the residuals the GP interpolates.  They are formed for the sampled voxels only; the
        # prediction is linear in them, so the whole brain needs only per-shell sums.
        shell_of = np.searchsorted(shells, labels[cols])
        counts = np.bincount(shell_of, minlength=shells.size).astype(np.float64)
        rng = np.random.default_rng(self.seed)
        pick = rng.choice(data.shape[0], size=min(self.n_voxels, data.shape[0]), replace=False)
        sampled = data[pick]
        sample_means = np.maximum(
            np.stack([sampled[:, cols[shell_of == k]].mean(axis=1, dtype=np.float64)
                      for k in range(shells.size)], axis=1),
            1e-6,
        )  # fmt: skip
        resid = sampled[:, cols] / sample_means[:, shell_of] - 1.0
        allcols = np.append(cols, target)
        theta = self._angles(bvecs[allcols])
        logb = np.log(np.maximum(bvals[allcols], 1.0))
        multi = int(labels[cols].max()) > 1
        a, lam, scale = self._select(theta[:-1, :-1], logb[:-1], resid, multi)
        self.hyperparameters = {"a": a, "lambda": lam, "log_b_scale": scale or 0.0}
        full = self._kernel(theta, logb, a, scale)
        weights = np.linalg.solve(full[:-1, :-1] + lam * np.eye(cols.size), full[:-1, -1])
        sums, weighted = self._shell_products(data, cols, shell_of, shells.size, weights)
        means = np.maximum(sums / counts, 1e-6)
        # mean_t (1 + Σ_k w_k (x_k / mean_s(k) - 1))
        mean_t = means[:, np.searchsorted(shells, labels[target])]
        directional = np.sum(weighted / means, axis=1) - weights.sum()
        lowest = bvals[cols[shell_of == 0]].mean()
        pred = mean_t * (1.0 + directional * self._anisotropy_weight(data, bvals, train, means[:, 0], lowest))
        return _finalize(pred, mean_t)

    def _anisotropy_weight(
        self, data: np.ndarray, bvals: np.ndarray, train: np.ndarray, shell_mean: np.ndarray, bval: float
    ) -> np.ndarray | float:
        """Per voxel, how much of the directional part to keep (see ``free_water``).

        ``shell_mean`` is each voxel's mean over the training volumes of the lowest shell,
        acquired at ``bval``.  1 everywhere without a b0 among the training volumes.
        """
        if self.free_water is None or not self._b0_columns(bvals, train).any():
            return 1.0
        low, high = self.free_water
        b0 = np.maximum(self._b0_mean(data, bvals, train), 1e-6)
        adc = np.log(np.maximum(b0 / shell_mean, 1.0)) / bval
        return np.clip((high - adc) / (high - low), 0.0, 1.0)


_MODELS = {cls.name: cls for cls in (B0Model, AverageDWIModel, DTIModel, DKIModel, GPModel)}


def get_model(name: str, b0_threshold: float = 50.0, **kwargs) -> LeaveOneOutModel:
    """Instantiate a model by name (one of :data:`MODEL_NAMES`)."""
    try:
        cls = _MODELS[name]
    except KeyError:
        raise ModelError(f"unknown model {name!r}; choose from {', '.join(MODEL_NAMES)}") from None
    return cls(b0_threshold=b0_threshold, **kwargs)


def choose_model(
    bvals: np.ndarray, b0_threshold: float = 50.0, bvecs: np.ndarray | None = None
) -> tuple[str, str]:
    """Pick a model for a gradient scheme (``--model auto``); return it and why.

    Parameters
    ----------
    bvals : (N,) array
    b0_threshold : float
    bvecs : (N, 3) array, optional
        The b-vectors: with them, repeated directions count once.
    """
    bvals = np.asarray(bvals, dtype=float)
    n_dwi = int((bvals > b0_threshold).sum())
    n_shells = int(shell_labels(bvals, b0_threshold).max())
    if n_dwi < 4:
        return "b0", f"only {n_dwi} diffusion-weighted volumes: too few for any signal model"
    if n_dwi < 7:
        return "avgdwi", f"{n_dwi} diffusion-weighted volumes: too few to fit a tensor leaving one out"
    if bvecs is not None:
        try:
            GPModel(b0_threshold=b0_threshold).check(bvals, bvecs)
        except ModelError:
            distinct = leave_one_out_directions(direction_groups(np.asarray(bvecs)[bvals > b0_threshold]))[0]
            return "avgdwi", (
                f"{distinct} distinct gradient directions in {n_dwi} diffusion-weighted volumes: "
                "too few to predict a direction from its neighbours"
            )
    return "gp", (
        f"{n_dwi} diffusion-weighted volumes in {n_shells} shell(s): the Gaussian process "
        "predicts from neighbouring directions without a parametric signal model"
    )
