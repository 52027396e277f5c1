"""OOD scorers with a scikit-learn style API: ``fit(ID features)`` then ``score(X)``; higher = more in-distribution.

Logit scores (no fitting; ``fit`` is a no-op kept for a uniform API) take the logits of each sample as a
dense array [N, V] or as a ``LogitStats`` (top-K sorted logits + logsumexp: enough for every logit score
and bounded in memory):
  MSP = max softmax; MaxLogit; Energy = T logsumexp(z / T) with T = 1; GEN = -sum_{top M} p^g (1-p)^g
  (g = 0.1, M = 100 or V); LogitGap = z_(1) - mean(z_(2..N+1)) (N = 10); MeanLogLikelihood = the
  per-sample mean token log-likelihood (its input is that number, computed in analysis.ood.features).
Feature scores are fitted on ID features [N_fit, d] only:
  Mahalanobis (one Gaussian, Ledoit-Wolf or OAS shrinkage: prompts are fewer than dimensions), KNN
  (L2-normalised, minus the distance to the k-th nearest ID feature), ViM (residual norm outside the top
  ``dim`` principal directions of the head input around u = -pinv(W_U) b_U, scaled by alpha), NECO
  (||PCA(scaled x)[:k]|| / ||scaled x|| times MaxLogit).

Numerical edge cases (checked, never silent):
- Logits: NaN or +inf anywhere, or a row with no finite logit, raises NumericalError naming the scorer and the
  row. -inf entries are masked tokens and act as if absent: MSP, MaxLogit, Energy and GEN ignore them naturally
  (exp(-inf) = 0); LogitGap averages only the finite logits among z_(2..N+1) (a row with fewer than N + 1 finite
  logits uses the ones it has; one with a single finite logit raises NumericalError).
- Rank: ViM's dim and NECO's k only make sense below / up to the numerical rank of the fit features (round-off
  directions beyond it are arbitrary: the scores would change with the order of the fit rows). The rank counts
  singular values above S.max() * max(n, d) * eps (numpy's matrix_rank default, eps of the features' dtype:
  float32 for extract_features' output, whose rounding noise is no direction), of X - u for ViM and of the
  standardised fit features for NECO (columns constant on the fit rows set to exact zeros, not the centring's
  round-off). ViM needs dim < rank; NECO k <= rank. ``cap_to_rank=True`` lowers them (the study does, with a
  note); otherwise InputError.
- A score with no meaning on the fit features raises NotDefinedError (an InputError; the study reports it as
  "not defined"): ViM when the rank is below 2 (no principal space with a residual the fit rows reach), NECO
  when it is 0 (all fit rows identical), Mahalanobis when the shrunk covariance is numerically singular (all fit
  rows identical gives a zero covariance; two mirrored rows give Ledoit-Wolf no shrinkage) - its precision
  would be a pseudo-inverse that ignores unseen directions.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from scipy.special import logsumexp
from sklearn.covariance import OAS, LedoitWolf
from sklearn.decomposition import PCA
from sklearn.neighbors import NearestNeighbors
from sklearn.preprocessing import StandardScaler

from analysis.core.errors import InputError, NumericalError

DEFAULT_TOP_K = 128  # logits kept per sample: >= GEN's M = 100 and LogitGap's N + 1 = 11
EPS = float(np.finfo(np.float64).eps)


class NotDefinedError(InputError):
    """The score has no meaning on these fit features (rank too low, zero covariance); ``reason`` is a short phrase."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


def rank_tolerance(singular_values: np.ndarray, shape: tuple[int, int], eps: float = EPS) -> float:
    """numpy's matrix_rank default: S.max() * max(n, d) * eps, eps of the input's dtype (0 for an all-zero matrix)."""
    S = np.asarray(singular_values, dtype=np.float64)
    return float(S.max(initial=0.0)) * max(shape) * eps


def numerical_rank(singular_values: np.ndarray, shape: tuple[int, int], eps: float = EPS) -> int:
    """Number of singular values above ``rank_tolerance`` (0 for an all-zero matrix)."""
    return int(np.sum(np.asarray(singular_values) > rank_tolerance(singular_values, shape, eps)))


def _eps_of(X) -> float:
    """Machine epsilon of the features as given (float32 features carry float32 rounding), float64's otherwise."""
    dt = np.asarray(X).dtype
    return float(np.finfo(dt).eps) if np.issubdtype(dt, np.floating) else EPS


@dataclass(frozen=True)
class LogitStats:
    """Per-sample logit summary: top [N, K] sorted descending, lse [N] = logsumexp over all V, vocab_size V."""

    top: np.ndarray
    lse: np.ndarray
    vocab_size: int

    def __len__(self) -> int:
        return int(self.lse.shape[0])

    def take(self, idx: np.ndarray) -> LogitStats:
        """The rows ``idx``."""
        return LogitStats(self.top[idx], self.lse[idx], self.vocab_size)

    @staticmethod
    def concat(parts: list[LogitStats]) -> LogitStats:
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


def _rows(mask: np.ndarray | np.bool_) -> str:
    idx = np.flatnonzero(mask)
    listed = ", ".join(map(str, idx[:8])) + (", ..." if idx.size > 8 else "")
    more = f" ({idx.size} rows in all: {listed})" if idx.size > 1 else ""
    return f"row {idx[0]} (counting from 0){more}"


def _check_logit_rows(nan: np.ndarray | np.bool_, pinf: np.ndarray | np.bool_, none_finite: np.ndarray | np.bool_,
                      scorer: str) -> None:
    if nan.any():
        raise NumericalError(f"{scorer} cannot score {_rows(nan)}: its logits contain NaN.")
    if pinf.any():
        raise NumericalError(f"{scorer} cannot score {_rows(pinf)}: its logits contain +inf.")
    if none_finite.any():
        raise NumericalError(f"{scorer} cannot score {_rows(none_finite)}: it has no finite logit (every entry "
                             "is -inf, i.e. masked).")


def as_stats(X: np.ndarray | LogitStats, scorer: str = "The logit score") -> LogitStats:
    """A validated LogitStats from dense logits [N, V] or a LogitStats: NaN, +inf or no finite logit in a row raise
    NumericalError naming ``scorer`` and the row; -inf (masked) entries are kept."""
    if isinstance(X, LogitStats):
        top, lse = np.asarray(X.top, dtype=np.float64), np.asarray(X.lse, dtype=np.float64)
        _check_logit_rows(np.isnan(top).any(axis=1) | np.isnan(lse), (top == np.inf).any(axis=1) | (lse == np.inf),
                          ~np.isfinite(top[:, 0]) | (lse == -np.inf), scorer)
        return X
    z = np.asarray(X, dtype=np.float64)
    if z.ndim != 2 or z.shape[1] == 0:
        raise InputError(f"{scorer}: logits must be a 2-D array [samples, vocabulary], got shape {z.shape}.")
    _check_logit_rows(np.isnan(z).any(axis=1), (z == np.inf).any(axis=1), ~np.isfinite(z).any(axis=1), scorer)
    return logit_stats(z)


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


class FeatureScorer(Protocol):
    """A feature score as the study uses it: ``fit`` on the ID fit rows (features, logits), then ``score`` rows."""

    def fit(self, X: Any, logits: Any) -> Any: ...

    def score(self, X: Any, logits: Any) -> np.ndarray: ...


class LogitScorer(Protocol):
    """A logit score (or the mean log-likelihood) as the study uses it: ``score`` rows, nothing to fit."""

    def score(self, X: Any) -> np.ndarray: ...


# ----------------------------------------------------------------------------------------- logit scores
class MSP(_Scorer):
    """Maximum softmax probability."""

    name = "MSP"

    def score(self, X) -> np.ndarray:
        """exp(z_max - logsumexp z): [N]."""
        s = as_stats(X, self.name)
        return np.exp(s.top[:, 0] - s.lse)


class MaxLogit(_Scorer):
    """The largest logit."""

    name = "MaxLogit"

    def score(self, X) -> np.ndarray:
        """z_max: [N]."""
        return as_stats(X, self.name).top[:, 0].astype(np.float64)


class Energy(_Scorer):
    """Negative free energy T logsumexp(z / T) with T = 1."""

    name = "Energy"

    def score(self, X) -> np.ndarray:
        """logsumexp(z): [N]."""
        return as_stats(X, self.name).lse.astype(np.float64)


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
        s = as_stats(X, self.name)
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
        """Gap between the top logit and the mean of the next N finite ones (fewer if there are fewer): [N_samples]."""
        s = as_stats(X, self.name)
        n = min(self.N, s.vocab_size - 1)
        if n < 1:
            raise InputError("LogitGap needs a vocabulary of at least 2 tokens.")
        if s.top.shape[1] < n + 1:
            raise InputError(f"LogitGap with N = {n} needs the top {n + 1} logits; only {s.top.shape[1]} were kept.")
        nxt = np.asarray(s.top[:, 1:n + 1], dtype=np.float64)
        finite = np.isfinite(nxt)  # -inf = masked token: not a logit
        count = finite.sum(axis=1)
        if (count == 0).any():
            raise NumericalError(f"LogitGap cannot score {_rows(count == 0)}: it has 1 finite logit, and the gap "
                                 "needs at least 2 (every other entry is -inf, i.e. masked).")
        return s.top[:, 0] - np.where(finite, nxt, 0.0).sum(axis=1) / count


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
        """Fit mean and shrunk covariance on ID features X [N_fit, d] (N_fit >= 2).

        NotDefinedError when the fit rows are all identical (zero covariance) or the shrunk covariance is
        numerically singular (rank < d with the matrix_rank default tolerance).
        """
        X = _features(X)
        if X.shape[0] < 2:
            raise InputError("Mahalanobis needs at least 2 ID prompts to fit a covariance.")
        if not np.ptp(X, axis=0).any():
            raise NotDefinedError("Mahalanobis is not defined on these fit features: every fit row is identical, so "
                                  "the covariance is zero and no distance can be measured.",
                                  "every fit row is identical (zero covariance)")
        self.est_ = (LedoitWolf() if self.shrinkage == "ledoit-wolf" else OAS()).fit(X)
        d = X.shape[1]
        self.rank_ = int(np.linalg.matrix_rank(self.est_.covariance_, hermitian=True))
        if self.rank_ < d:
            raise NotDefinedError(
                f"Mahalanobis is not defined on these fit features: the shrunk covariance is singular (numerical "
                f"rank {self.rank_} of {d}, shrinkage {float(self.est_.shrinkage_):.3g}), so its inverse would ignore "
                "unseen directions.", f"the shrunk covariance is singular (rank {self.rank_} of {d})")
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

    def __init__(self, dim: int, origin: np.ndarray | None = None, cap_to_rank: bool = False):
        if dim < 1:
            raise InputError(f"ViM's dim must be at least 1, got {dim}.")
        self.dim = int(dim)
        self.origin = None if origin is None else np.asarray(origin, dtype=np.float64)
        self.cap_to_rank = bool(cap_to_rank)

    def fit(self, X, logits):
        """Fit the principal space of head inputs X [N_fit, d] around u and alpha from ID logits.

        dim must be below the numerical rank r of X - u (r <= min(N_fit, d)), or exactly d (empty residual: ViM
        is then Energy); with cap_to_rank it is lowered to r - 1 (``dim_``). r < 2: NotDefinedError.
        The principal directions are the right singular vectors of X - u (= the eigenvectors of its covariance
        around u, as in the official code, without squaring the condition number).
        """
        eps = _eps_of(X)
        X = _features(X, "head inputs")
        n, d = X.shape
        if self.dim > d:
            raise InputError(f"ViM's dim = {self.dim} is larger than the feature width d = {d}.")
        u = np.zeros(d) if self.origin is None else self.origin
        if u.shape != (d,):
            raise InputError(f"ViM's origin has shape {u.shape}, expected ({d},).")
        stats = as_stats(logits, self.name)
        self.u_ = u
        _, S, Vt = np.linalg.svd(X - u, full_matrices=False)  # Vt [min(n, d), d], S descending
        self.rank_, self.rank_tol_ = numerical_rank(S, (n, d), eps), rank_tolerance(S, (n, d), eps)
        dim = self.dim
        if dim < d:
            if self.rank_ < 2:
                raise NotDefinedError(
                    f"ViM is not defined on these fit features: around ViM's origin they have numerical rank "
                    f"{self.rank_} (tolerance {self.rank_tol_:.3g}), and ViM needs at least 2 (a principal space of "
                    "dim >= 1 plus a residual the fit rows reach).", f"the fit features have numerical rank "
                    f"{self.rank_} around ViM's origin (ViM needs at least 2)")
            if dim >= self.rank_:
                if not self.cap_to_rank:
                    raise InputError(f"ViM's dim = {dim} must be smaller than the numerical rank {self.rank_} of the "
                                     f"fit features around ViM's origin (at most min(ID fit prompts = {n}, d = {d})). "
                                     "Lower dim or add ID prompts.")
                dim = self.rank_ - 1
        self.dim_ = dim
        self.P_ = Vt[:dim] if dim < d else None  # principal directions [dim, d]; None: empty residual
        v = self._vlogit(X)
        mean_v = float(v.mean())
        mean_max = float(np.mean(stats.top[:, 0], dtype=np.float64))  # float64: a float32 mean depends on the row order
        self.alpha_ = mean_max / mean_v if mean_v > 0 else 0.0
        self.fitted_ = True
        return self

    def _vlogit(self, X: np.ndarray) -> np.ndarray:
        if self.P_ is None:
            return np.zeros(X.shape[0])
        xc = X - self.u_
        return np.linalg.norm(xc - (xc @ self.P_.T) @ self.P_, axis=1)  # the part outside the principal space

    def score(self, X, logits) -> np.ndarray:
        """logsumexp(z) - alpha * ||(x - u) outside the principal space||: [N]."""
        self._check_fitted()
        return as_stats(logits, self.name).lse - self.alpha_ * self._vlogit(_features(X, "head inputs"))


class NECO(_Scorer):
    """Neural-collapse score: ||PCA(StandardScaler(x))[:k]|| / ||StandardScaler(x)||, times MaxLogit."""

    name = "NECO"
    needs_fit = True

    def __init__(self, k: int, times_maxlogit: bool = True, cap_to_rank: bool = False):
        if k < 1:
            raise InputError(f"NECO's k must be at least 1, got {k}.")
        self.k, self.times_maxlogit, self.cap_to_rank = int(k), bool(times_maxlogit), bool(cap_to_rank)

    def fit(self, X, logits=None):  # noqa: ARG002
        """Fit the scaler and a full PCA on ID features X [N_fit, d]; k must be at most the numerical rank r of the
        standardised fit features (r <= min(N_fit, d)); with cap_to_rank it is lowered to r (``k_``).
        r = 0 (all fit rows identical): NotDefinedError."""
        eps = _eps_of(X)
        X = _features(X)
        n, d = X.shape
        self.scaler_ = StandardScaler().fit(X)
        z = self.scaler_.transform(X)
        z[:, np.ptp(X, axis=0) == 0] = 0.0  # constant on the fit rows: exact zeros, not the centring's round-off
        if not z.any():
            self.rank_, self.rank_tol_ = 0, 0.0
            raise NotDefinedError("NECO is not defined on these fit features: every fit row is identical, so there "
                                  "is no principal space.", "every fit row is identical (numerical rank 0)")
        self.pca_ = PCA(svd_solver="full").fit(z)
        S = self.pca_.singular_values_
        self.rank_, self.rank_tol_ = numerical_rank(S, (n, d), eps), rank_tolerance(S, (n, d), eps)
        k = self.k
        if k > self.rank_:
            if not self.cap_to_rank:
                raise InputError(f"NECO's k = {k} must be at most the numerical rank {self.rank_} of the standardised "
                                 f"fit features (at most min(ID fit prompts = {n}, d = {d})). Lower k or add ID "
                                 "prompts.")
            k = self.rank_
        self.k_ = k
        self.fitted_ = True
        return self

    def score(self, X, logits=None) -> np.ndarray:
        """Ratio of the norm kept by the top k components (times MaxLogit when asked): [N]."""
        self._check_fitted()
        z = self.scaler_.transform(_features(X))
        r = np.linalg.norm(self.pca_.transform(z)[:, :self.k_], axis=1) / np.maximum(np.linalg.norm(z, axis=1), 1e-12)
        if self.times_maxlogit:
            if logits is None:
                raise InputError("NECO times MaxLogit needs the logits.")
            r = r * as_stats(logits, self.name).top[:, 0]
        return r
