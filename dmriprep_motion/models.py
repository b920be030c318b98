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


class ModelError(ValueError):
    """The data cannot support the requested model (a user error)."""


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
        """Raise :class:`ModelError` if the gradient scheme cannot support the model."""

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

    def _b0_mean(self, data: np.ndarray, bvals: np.ndarray, train: np.ndarray) -> np.ndarray:
        sel = train & (bvals <= self.b0_threshold)
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
        dwi = np.asarray(bvals) > self.b0_threshold
        n_shells = int(shell_labels(np.asarray(bvals), self.b0_threshold).max())
        # The target is left out, so the fit sees one direction fewer.
        if dwi.sum() - 1 < self.min_directions:
            raise ModelError(
                f"model '{self.name}' needs at least {self.min_directions + 1} diffusion-weighted "
                f"volumes (found {int(dwi.sum())}); try --model avgdwi or b0"
            )
        if n_shells < self.min_shells:
            raise ModelError(
                f"model '{self.name}' needs at least {self.min_shells} non-zero b-value shells "
                f"(found {n_shells}); use --model dti or gp for single-shell data"
            )

    @abstractmethod
    def _model(self, gtab):
        """Build the DIPY model for a gradient table."""

    @abstractmethod
    def _design(self, gtab) -> np.ndarray:
        """DIPY's design matrix of the log-signal (one row per volume)."""

    def _predict(self, data, bvals, bvecs, target, train):
        self.check(bvals[train | (np.arange(bvals.size) == target)], bvecs)
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
    """

    name = "gp"
    angles = np.array([0.3, 0.45, 0.6, 0.8, 1.0, 1.25, 1.6, 2.2, 3.0])
    ratios = np.logspace(-2.5, 1.0, 8)
    log_b_scales = np.array([0.3, 0.7, 1.5])
    min_directions = 3

    def __init__(self, b0_threshold: float = 50.0, n_voxels: int = 1000, seed: int = 0) -> None:
        super().__init__(b0_threshold)
        self.n_voxels = n_voxels
        self.seed = seed
        self.hyperparameters: dict[str, float] = {}

    def check(self, bvals, bvecs):
        if (np.asarray(bvals) > self.b0_threshold).sum() - 1 < self.min_directions:
            raise ModelError(
                f"model 'gp' needs at least {self.min_directions + 1} diffusion-weighted volumes"
            )

    @staticmethod
    def _angles(bvecs: np.ndarray) -> np.ndarray:
        return np.arccos(np.clip(np.abs(bvecs @ bvecs.T), 0.0, 1.0))

    def _normalized(self, data, bvals, train):
        labels = shell_labels(bvals, self.b0_threshold)
        means = {}
        cols = np.flatnonzero(train & (labels > 0))
        resid = np.empty((data.shape[0], cols.size))
        for k, col in enumerate(cols):
            lab = labels[col]
            if lab not in means:
                sel = train & (labels == lab)
                means[lab] = np.maximum(data[:, sel].mean(axis=1, dtype=np.float64), 1e-6)
            resid[:, k] = data[:, col] / means[lab] - 1.0
        return cols, resid, means, labels

    def _kernel(self, theta, logb, a, scale):
        k = spherical_kernel(theta, a)
        if scale is not None:
            k = k * np.exp(-((logb[:, None] - logb[None, :]) ** 2) / (2 * scale**2))
        return k

    def _select(self, theta, logb, sample, multi):
        best = (np.inf, None)
        n = theta.shape[0]
        eye = np.eye(n)
        for scale in self.log_b_scales if multi else [None]:
            for a in self.angles:
                base = self._kernel(theta, logb, a, scale)
                for lam in self.ratios:
                    inv = np.linalg.inv(base + lam * eye)
                    loo = (sample @ inv) / np.diag(inv)
                    err = float(np.mean(loo**2))
                    if err < best[0]:
                        best = (err, (a, lam, scale))
        return best[1]

    def _predict(self, data, bvals, bvecs, target, train):
        self.check(bvals, bvecs)
        cols, resid, means, labels = self._normalized(data, bvals, train)
        if labels[target] == 0:  # b0 target: the average b0 is the GP's limit
            b0 = self._b0_mean(data, bvals, train)
            return _finalize(b0, b0)
        if labels[target] not in means or cols.size < self.min_directions:
            mean = self._shell_mean(data, bvals, target, train)
            return _finalize(mean, mean)
        rng = np.random.default_rng(self.seed)
        pick = rng.choice(data.shape[0], size=min(self.n_voxels, data.shape[0]), replace=False)
        allcols = np.append(cols, target)
        theta = self._angles(bvecs[allcols])
        logb = np.log(np.maximum(bvals[allcols], 1.0))
        multi = int(labels[cols].max()) > 1
        a, lam, scale = self._select(theta[:-1, :-1], logb[:-1], resid[pick], multi)
        self.hyperparameters = {"a": a, "lambda": lam, "log_b_scale": scale or 0.0}
        full = self._kernel(theta, logb, a, scale)
        weights = np.linalg.solve(full[:-1, :-1] + lam * np.eye(cols.size), full[:-1, -1])
        pred = means[labels[target]] * (1.0 + resid @ weights)
        return _finalize(pred, means[labels[target]])


_MODELS = {cls.name: cls for cls in (B0Model, AverageDWIModel, DTIModel, DKIModel, GPModel)}


def get_model(name: str, b0_threshold: float = 50.0, **kwargs) -> LeaveOneOutModel:
    """Instantiate a model by name (one of :data:`MODEL_NAMES`)."""
    try:
        cls = _MODELS[name]
    except KeyError:
        raise ModelError(f"unknown model {name!r}; choose from {', '.join(MODEL_NAMES)}") from None
    return cls(b0_threshold=b0_threshold, **kwargs)


def choose_model(bvals: np.ndarray, b0_threshold: float = 50.0) -> tuple[str, str]:
    """Pick a model for a gradient scheme (``--model auto``); return it and why."""
    bvals = np.asarray(bvals, dtype=float)
    n_dwi = int((bvals > b0_threshold).sum())
    n_shells = int(shell_labels(bvals, b0_threshold).max())
    if n_dwi < 4:
        return "b0", f"only {n_dwi} diffusion-weighted volumes: too few for any signal model"
    if n_dwi < 7:
        return "avgdwi", f"{n_dwi} diffusion-weighted volumes: too few to fit a tensor leaving one out"
    return "gp", (
        f"{n_dwi} diffusion-weighted volumes in {n_shells} shell(s): the Gaussian process "
        "predicts from neighbouring directions without a parametric signal model"
    )
