"""OOD scorers with a scikit-learn style API: ``fit(ID features)`` then ``score(X)``; higher = more in-distribution.

Logit scores (no fitting; ``fit`` is a no-op kept for a uniform API) take the logits of each sample as a
dense array [N, V] or as a ``LogitStats`` (top-K sorted logits + logsumexp: enough for every logit score
and bounded in memory):
  MSP = max softmax; MaxLogit; Energy = T logsumexp(z / T) with T = 1; GEN = -sum_{top M} p^g (1-p)^g
  (g = 0.1, M = 100 or V); LogitGap = z_(1) - mean(z_(2..N+1)) (N = 10); MeanLogLikelihood = the
  per-sample mean token log-likelihood (its input is that number, computed in analysis.ood_features).
Feature scores are fitted on ID features [N_fit, d] only:
  Mahalanobis (one Gaussian, Ledoit-Wolf or OAS shrinkage: prompts are fewer than dimensions), KNN
  (L2-normalised, minus the distance to the k-th nearest ID feature), ViM (residual norm outside the top
  ``dim`` principal directions of the head input around u = -pinv(W_U) b_U, scaled by alpha), NECO
  (||PCA(scaled x)[:k]|| / ||scaled x|| times MaxLogit).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import logsumexp
from sklearn.covariance import OAS, LedoitWolf
from sklearn.decomposition import PCA
from sklearn.neighbors import NearestNeighbors
from sklearn.preprocessing import StandardScaler

from analysis.errors import InputError, NumericalError

DEFAULT_TOP_K = 128  # logits kept per sample: >= GEN's M = 100 and LogitGap's N + 1 = 11


@dataclass(frozen=True)
class LogitStats:
    """Per-sample logit summary: top [N, K] sorted descending, lse [N] = logsumexp over all V, vocab_size V."""

    top: np.ndarray
    lse: np.ndarray
    vocab_size: int

    def __len__(self) -> int:
        return int(self.lse.shape[0])

    def take(self, idx: np.ndarray) -> "LogitStats":
        """The rows ``idx``."""
        return LogitStats(self.top[idx], self.lse[idx], self.vocab_size)

    @staticmethod
    def concat(parts: list["LogitStats"]) -> "LogitStats":
        """Rows of several LogitStats stacked."""
        return LogitStats(np.concatenate([p.top for p in parts]), np.concatenate([p.lse for p in parts]),
                          parts[0].vocab_size)


def logit_stats(z: np.ndarray, k: int = DEFAULT_TOP_K) -> LogitStats:
    """Summarise dense logits z [N, V] (numpy) into a LogitStats with the top min(k, V) logits."""
    z = np.asarray(z, dtype=np.float64)
    if z.ndim != 2:
        raise InputError(f"Logits must be a 2-D array [samples, vocabulary], got shape {z.shape}.")
    k = min(int(k), z.shape[1])
    part = np.partition(z, z.shape[1] - k, axis=1)[:, z.shape[1] - k:] if k < z.shape[1] else z
    top = -np.sort(-part, axis=1)
    return LogitStats(top, logsumexp(z, axis=1), int(z.shape[1]))


def as_stats(X: "np.ndarray | LogitStats") -> LogitStats:
    """A LogitStats from dense logits [N, V] or the LogitStats itself."""
    return X if isinstance(X, LogitStats) else logit_stats(X)


def _features(X: np.ndarray, what: str = "features") -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] == 0:
        raise InputError(f"The {what} must be a non-empty 2-D array [samples, dimensions], got shape {X.shape}.")
    if not np.all(np.isfinite(X)):
        raise NumericalError(f"The {what} contain NaN or infinite values; cannot score them.")
    return X


class _Scorer:
    """Base: ``fit`` returns self; ``score`` returns [N] with higher = more in-distribution."""

    name = "score"
    needs_fit = False

    def fit(self, X=None, logits=None):  # noqa: ARG002 - uniform API
        """No fitting needed."""
        return self

    def _check_fitted(self) -> None:
        if self.needs_fit and not getattr(self, "fitted_", False):
            raise InputError(f"{self.name} must be fitted on ID features before scoring.")


# ----------------------------------------------------------------------------------------- logit scores
class MSP(_Scorer):
    """Maximum softmax probability."""

    name = "MSP"

    def score(self, X) -> np.ndarray:
        """exp(z_max - logsumexp z): [N]."""
        s = as_stats(X)
        return np.exp(s.top[:, 0] - s.lse)


class MaxLogit(_Scorer):
    """The largest logit."""

    name = "MaxLogit"

    def score(self, X) -> np.ndarray:
        """z_max: [N]."""
        return as_stats(X).top[:, 0].astype(np.float64)


class Energy(_Scorer):
    """Negative free energy T logsumexp(z / T) with T = 1."""

    name = "Energy"

    def score(self, X) -> np.ndarray:
        """logsumexp(z): [N]."""
        return as_stats(X).lse.astype(np.float64)


class GEN(_Scorer):
    """Generalised entropy: -sum over the top M probabilities of p^g (1 - p)^g."""

    name = "GEN"

    def __init__(self, gamma: float = 0.1, M: int = 100):
        if not 0 < gamma < 1:
            raise InputError(f"GEN's gamma must be between 0 and 1, got {gamma}.")
        if M < 1:
            raise InputError(f"GEN's M must be at least 1, got {M}.")
        self.gamma, self.M = float(gamma), int(M)

    def score(self, X) -> np.ndarray:
        """-sum_{i<=min(M,V)} p_i^g (1-p_i)^g over the top probabilities: [N]."""
        s = as_stats(X)
        m = min(self.M, s.vocab_size)
        if s.top.shape[1] < m:
            raise InputError(f"GEN with M = {m} needs the top {m} logits; only {s.top.shape[1]} were kept.")
        p = np.exp(s.top[:, :m] - s.lse[:, None])
        p = np.clip(p, 0.0, 1.0)
        return -np.sum(p ** self.gamma * (1.0 - p) ** self.gamma, axis=1)


class LogitGap(_Scorer):
    """z_(1) - mean(z_(2..N+1)) of the sorted logits (N = 1 is the top-2 margin)."""

    name = "LogitGap"

    def __init__(self, N: int = 10):
        if N < 1:
            raise InputError(f"LogitGap's N must be at least 1, got {N}.")
        self.N = int(N)

    def score(self, X) -> np.ndarray:
        """Gap between the top logit and the mean of the next N: [N_samples]."""
        s = as_stats(X)
        n = min(self.N, s.vocab_size - 1)
        if n < 1:
            raise InputError("LogitGap needs a vocabulary of at least 2 tokens.")
        if s.top.shape[1] < n + 1:
            raise InputError(f"LogitGap with N = {n} needs the top {n + 1} logits; only {s.top.shape[1]} were kept.")
        return s.top[:, 0] - s.top[:, 1:n + 1].mean(axis=1)


class MeanLogLikelihood(_Scorer):
    """Per-sample mean token log-likelihood (minus the log-perplexity); input: that value per sample [N]."""

    name = "MeanLogLik"

    def score(self, X) -> np.ndarray:
        """The mean log-likelihood itself: [N]."""
        x = np.asarray(X, dtype=np.float64).ravel()
        if not np.all(np.isfinite(x)):
            raise NumericalError("Some mean log-likelihoods are NaN or infinite.")
        return x


# ----------------------------------------------------------------------------------------- feature scores
class Mahalanobis(_Scorer):
    """Minus the squared Mahalanobis distance to one Gaussian fitted on ID with a shrinkage covariance."""

    name = "Mahalanobis"
    needs_fit = True

    def __init__(self, shrinkage: str = "ledoit-wolf"):
        if shrinkage not in ("ledoit-wolf", "oas"):
            raise InputError(f"Mahalanobis shrinkage must be 'ledoit-wolf' or 'oas', got {shrinkage!r}.")
        self.shrinkage = shrinkage

    def fit(self, X, logits=None):  # noqa: ARG002
        """Fit mean and shrunk covariance on ID features X [N_fit, d] (N_fit >= 2)."""
        X = _features(X)
        if X.shape[0] < 2:
            raise InputError("Mahalanobis needs at least 2 ID prompts to fit a covariance.")
        self.est_ = (LedoitWolf() if self.shrinkage == "ledoit-wolf" else OAS()).fit(X)
        self.fitted_ = True
        return self

    def score(self, X, logits=None) -> np.ndarray:  # noqa: ARG002
        """-(x - mu)^T Sigma^-1 (x - mu): [N]."""
        self._check_fitted()
        return -self.est_.mahalanobis(_features(X))


def _l2(X: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.maximum(n, 1e-12)


class KNN(_Scorer):
    """Minus the Euclidean distance of the L2-normalised feature to its k-th nearest normalised ID feature."""

    name = "KNN"
    needs_fit = True

    def __init__(self, k: int = 5):
        if k < 1:
            raise InputError(f"KNN's k must be at least 1, got {k}.")
        self.k = int(k)

    def fit(self, X, logits=None):  # noqa: ARG002
        """Index the normalised ID features X [N_fit, d]; needs k < N_fit."""
        X = _features(X)
        if self.k >= X.shape[0]:
            raise InputError(f"KNN's k = {self.k} must be smaller than the number of ID prompts it is fitted on "
                             f"({X.shape[0]}). Lower k or add ID prompts.")
        self.nn_ = NearestNeighbors(n_neighbors=self.k).fit(_l2(X))
        self.fitted_ = True
        return self

    def score(self, X, logits=None) -> np.ndarray:  # noqa: ARG002
        """-||x/|x| - (k-th nearest ID)||: [N]."""
        self._check_fitted()
        dist, _ = self.nn_.kneighbors(_l2(_features(X)), n_neighbors=self.k)
        return -dist[:, -1]


def vim_origin(W_U: np.ndarray, b_U: np.ndarray | None) -> np.ndarray:
    """ViM's origin u = -pinv(W_U) b_U [d] (zeros for an unbiased head); W_U is [V, d]."""
    W = np.asarray(W_U, dtype=np.float64)
    if b_U is None:
        return np.zeros(W.shape[1])
    return -np.linalg.pinv(W) @ np.asarray(b_U, dtype=np.float64)


def default_vim_dim(d: int) -> int:
    """The official rule: d >= 2048 -> 1000, d >= 768 -> 512, else d // 2."""
    return 1000 if d >= 2048 else 512 if d >= 768 else max(1, d // 2)


class ViM(_Scorer):
    """Virtual-logit matching: logsumexp(z) - alpha * ||residual of (x - u) beyond the top ``dim`` eigenvectors||."""

    name = "ViM"
    needs_fit = True

    def __init__(self, dim: int, origin: np.ndarray | None = None):
        if dim < 1:
            raise InputError(f"ViM's dim must be at least 1, got {dim}.")
        self.dim = int(dim)
        self.origin = None if origin is None else np.asarray(origin, dtype=np.float64)

    def fit(self, X, logits):
        """Fit the principal space of head inputs X [N_fit, d] around u and alpha from ID logits.

        dim must be < min(d, N_fit), or exactly d (empty residual: ViM is then Energy).
        """
        X = _features(X, "head inputs")
        n, d = X.shape
        if self.dim > d:
            raise InputError(f"ViM's dim = {self.dim} is larger than the feature width d = {d}.")
        if self.dim < d and self.dim >= n:
            raise InputError(f"ViM's dim = {self.dim} must be smaller than the number of ID prompts it is fitted on "
                             f"({n}). Lower dim or add ID prompts.")
        u = np.zeros(d) if self.origin is None else self.origin
        if u.shape != (d,):
            raise InputError(f"ViM's origin has shape {u.shape}, expected ({d},).")
        self.u_ = u
        xc = X - u
        cov = xc.T @ xc / n  # covariance around u (assume_centered, as in the official code)
        vals, vecs = np.linalg.eigh(cov)
        order = np.argsort(vals)[::-1]
        self.NS_ = vecs[:, order[self.dim:]]  # [d, d - dim]
        stats = as_stats(logits)
        v = self._vlogit(X)
        mean_v = float(v.mean())
        self.alpha_ = float(stats.top[:, 0].mean()) / mean_v if mean_v > 0 else 0.0
        self.fitted_ = True
        return self

    def _vlogit(self, X: np.ndarray) -> np.ndarray:
        if self.NS_.shape[1] == 0:
            return np.zeros(X.shape[0])
        return np.linalg.norm((X - self.u_) @ self.NS_, axis=1)

    def score(self, X, logits) -> np.ndarray:
        """logsumexp(z) - alpha * ||(x - u) NS||: [N]."""
        self._check_fitted()
        return as_stats(logits).lse - self.alpha_ * self._vlogit(_features(X, "head inputs"))


class NECO(_Scorer):
    """Neural-collapse score: ||PCA(StandardScaler(x))[:k]|| / ||StandardScaler(x)||, times MaxLogit."""

    name = "NECO"
    needs_fit = True

    def __init__(self, k: int, times_maxlogit: bool = True):
        if k < 1:
            raise InputError(f"NECO's k must be at least 1, got {k}.")
        self.k, self.times_maxlogit = int(k), bool(times_maxlogit)

    def fit(self, X, logits=None):  # noqa: ARG002
        """Fit the scaler and a full PCA on ID features X [N_fit, d]; needs k <= min(N_fit, d)."""
        X = _features(X)
        if self.k > min(X.shape):
            raise InputError(f"NECO's k = {self.k} must be at most min(ID prompts, width) = {min(X.shape)}.")
        self.scaler_ = StandardScaler().fit(X)
        self.pca_ = PCA(svd_solver="full").fit(self.scaler_.transform(X))
        self.fitted_ = True
        return self

    def score(self, X, logits=None) -> np.ndarray:
        """Ratio of the norm kept by the top k components (times MaxLogit when asked): [N]."""
        self._check_fitted()
        z = self.scaler_.transform(_features(X))
        r = np.linalg.norm(self.pca_.transform(z)[:, :self.k], axis=1) / np.maximum(np.linalg.norm(z, axis=1), 1e-12)
        if self.times_maxlogit:
            if logits is None:
                raise InputError("NECO times MaxLogit needs the logits.")
            r = r * as_stats(logits).top[:, 0]
        return r
