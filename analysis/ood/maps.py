"""2-D maps of one layer's OOD features: standardise, then PCA or UMAP fitted on the ID set or on every point.

A fitted map is kept in a small bounded cache keyed on the features' content hash and every setting (LIT's
projector caching), so redrawing a page never refits it.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler

from analysis.core.errors import InputError
from analysis.ood.features import OODFeatures


@dataclass(frozen=True)
class Projection2D:
    """2-D map of one layer's features: coords [n, 2], set name and prompt per point, how it was fitted."""

    coords: np.ndarray
    set_names: tuple[str, ...]
    prompts: tuple[str, ...]
    layer: int
    pooling: str
    method: str
    fit_on: str
    random_state: int
    explained: tuple[float, ...] | None


_PROJ_CACHE: OrderedDict[tuple, Projection2D] = OrderedDict()
_PROJ_CACHE_MAX = 16


def clear_map_cache() -> None:
    """Forget every fitted 2-D map (benchmarks and tests time or check fresh fits)."""
    _PROJ_CACHE.clear()


def project_2d(id_feats: OODFeatures, ood_feats: Mapping[str, OODFeatures], layer: int, *, pooling: str = "last",
               method: str = "pca", fit_on: str = "id", random_state: int = 0, id_name: str = "ID") -> Projection2D:
    """Standardise then project one layer's pooled features to 2-D (PCA or UMAP) fitted on ID or on all points.

    The fitted projector is cached (bounded) on the features' content hash and every setting.
    """
    if method not in ("pca", "umap"):
        raise InputError(f"Projection must be 'pca' or 'umap', got {method!r}.")
    if fit_on not in ("id", "all"):
        raise InputError(f"Fit the projection on 'id' or 'all', got {fit_on!r}.")
    if layer not in id_feats.layers:
        raise InputError(f"Layer {layer} was not computed (layers {id_feats.layers[0]}..{id_feats.layers[-1]}).")
    li = id_feats.layers.index(layer)
    blocks = [(id_name, id_feats)] + list(ood_feats.items())
    X = np.concatenate([f.pooled(pooling)[li] for _, f in blocks]).astype(np.float64)
    names = tuple(n for n, f in blocks for _ in range(len(f)))
    prompts = tuple(p for _, f in blocks for p in f.prompts)
    h = hashlib.sha256(X.tobytes())
    h.update("\x00".join(names).encode())
    key = (h.hexdigest(), layer, pooling, method, fit_on, random_state)
    if key in _PROJ_CACHE:
        _PROJ_CACHE.move_to_end(key)
        return _PROJ_CACHE[key]
    fit_rows = X[: len(id_feats)] if fit_on == "id" else X
    if fit_rows.shape[0] < 3:
        raise InputError("A 2-D map needs at least 3 points to fit on.")
    scaler = StandardScaler().fit(fit_rows)
    Z, Zfit = scaler.transform(X), scaler.transform(fit_rows)
    explained = None
    if method == "pca":
        pca = PCA(n_components=2, random_state=random_state).fit(Zfit)
        coords = pca.transform(Z)
        explained = tuple(float(v) for v in pca.explained_variance_ratio_)
    else:
        import umap  # lazy: umap-learn takes seconds to import (numba); only the UMAP map needs it
        reducer = umap.UMAP(n_components=2, n_neighbors=max(2, min(15, Zfit.shape[0] - 1)),
                            random_state=random_state, n_jobs=1).fit(Zfit)
        coords = reducer.transform(Z) if fit_on == "id" else reducer.embedding_
    proj = Projection2D(np.asarray(coords, np.float32), names, prompts, layer, pooling, method, fit_on, random_state,
                        explained)
    _PROJ_CACHE[key] = proj
    while len(_PROJ_CACHE) > _PROJ_CACHE_MAX:
        _PROJ_CACHE.popitem(last=False)
    return proj
