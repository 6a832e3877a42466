"""How much of an embedding is *where the encoder window fell*, and its removal.

Vision transformers with absolute in-window positions (Galileo, OlmoEarth, Prithvi-EO,
ViT-MAE) add a component to every output token that depends on the token's place in its
window, not on the ground. On a tiled cube that component repeats with the window
stride: a query's nearest neighbours sit at its own in-window position in other windows,
and the first principal component is the position.

:func:`position_stats` measures it for any embedding cube: the share of the top-k
cosine neighbours at the query's in-window position against chance, and the share of
PC1's (and of the total) variance explained by the in-window position, each with the
share noise alone gives on a grid of that size (a between-group share is never 0 on a
finite grid).
"""

from __future__ import annotations

import numpy as np


def _phases(n: int, offset_patches: int, period: int) -> np.ndarray:
    """In-window position (0 … period−1) of each of ``n`` patches whose first core starts ``offset`` before."""
    return (np.arange(n) + offset_patches) % period


def position_share(x: np.ndarray, groups: np.ndarray) -> float:
    """Share of the variance of ``x`` (``(N, D)``, summed over columns) explained by ``groups`` (N labels).

    Between-group sum of squares over the total; with in-window positions as groups it says how
    much of a map (a similarity layer, a principal component) repeats with the window stride.
    Noise alone gives about (G−1)/(N−1) for G groups.
    """
    xc = x - x.mean(axis=0, keepdims=True)
    total = float((xc * xc).sum())
    if total <= 0:
        return float("nan")
    _, inv, counts = np.unique(groups, return_inverse=True, return_counts=True)
    sums = np.zeros((counts.size, x.shape[1]))
    np.add.at(sums, inv, xc)
    between = float(((sums * sums) / counts[:, None]).sum())
    return between / total


def position_stats(values, *, period: int, offset: tuple[int, int] = (0, 0), k: int = 10,
                   max_queries: int = 2000, seed: int = 0, total: bool = True) -> dict | None:
    """Position-bias diagnostic of an embedding array.

    Parameters
    ----------
    values:
        ``(..., y, x)`` numpy (or dask) array; every leading dim is part of the vector
        (so a ``(time, embedding, y, x)`` cube is judged on its whole per-patch series).
    period:
        Window stride in patches (core side): patches ``period`` apart share an in-window position.
    offset:
        ``(row, col)`` in patches by which the first window core starts before the array's
        first patch (the grid's window phase): position = (index + offset) mod period.
    k:
        Neighbours per query.
    max_queries:
        Queries drawn (deterministically) from the valid patches; all patches are searched.
    total:
        Also compute ``total_position_share`` (over every dimension; False leaves it out).

    Returns
    -------
    dict or None
        ``same_position_rate`` (share of the top-k hits, self excluded, at the query's
        in-window position), ``same_position_chance`` (that share for random hits),
        ``same_position_over_chance``; ``pc1_position_share`` (variance of PC1 scores
        explained by the position, between-group over total) and ``pc1_position_share_null``
        (its expectation with no position effect: (G−1)/(N−1) for G occupied positions and
        N patches); ``total_position_share`` (the same over all dimensions) and
        ``positions``/``patches``. None when fewer than two patches per position exist.
    """
    from eoembed.exceptions import ParameterError

    if isinstance(period, bool) or not isinstance(period, (int, np.integer)) or period < 1:
        raise ParameterError(f"period must be the window stride in patches (an integer >= 1), got {period!r}; "
                             "for an embedding cube: (tile_size - 2 * halo) // patch_size from its attrs.")
    if k < 1:
        raise ParameterError(f"k (neighbours per query) must be >= 1, got {k!r}.")
    if hasattr(values, "dask"):
        values = values.compute()
    v = np.asarray(values, dtype="float64")
    if v.ndim < 2:
        raise ParameterError(f"values must be (..., y, x) with the vector in the leading dims, got shape {v.shape}.")
    ny, nx = v.shape[-2:]
    v = v.reshape(-1, ny * nx).T  # (N, D)
    pos = (_phases(ny, offset[0], period)[:, None] * period + _phases(nx, offset[1], period)[None, :]).ravel()
    ok = np.isfinite(v).all(axis=1)
    v, pos = v[ok], pos[ok]
    n = len(v)
    g = np.unique(pos).size
    if n < 2 * g or n < k + 2 or g < 2:
        return None
    norm = np.linalg.norm(v, axis=1, keepdims=True)
    u = v / np.where(norm > 0, norm, 1.0)
    rng = np.random.default_rng(seed)
    q = np.sort(rng.choice(n, size=min(max_queries, n), replace=False))
    counts = np.bincount(pos, minlength=period * period)
    hits = 0
    chance = 0.0
    for s in range(0, len(q), 512):
        qi = q[s : s + 512]
        sims = u[qi] @ u.T
        sims[np.arange(len(qi)), qi] = -np.inf  # never the query itself
        top = np.argpartition(-sims, k, axis=1)[:, :k]
        hits += int((pos[top] == pos[qi][:, None]).sum())
        chance += float(((counts[pos[qi]] - 1) / (n - 1)).sum())
    rate = hits / (len(q) * k)
    chance /= len(q)
    vc = v - v.mean(axis=0, keepdims=True)
    # PC1 from the (D, D) covariance: the same axis as an SVD of the (N, D) patches at a fraction of its cost
    _, vecs = np.linalg.eigh(vc.T @ vc)
    pc1 = vc @ vecs[:, -1]
    null = (g - 1) / (n - 1)
    out = {
        "same_position_rate": rate,
        "same_position_chance": chance,
        "same_position_over_chance": rate / chance if chance > 0 else float("nan"),
        "pc1_position_share": position_share(pc1[:, None], pos),
        "pc1_position_share_null": null,
        "total_position_share": position_share(v, pos) if total else None,
        "positions": int(g),
        "patches": int(n),
    }
    return out


#: Square of patches (per side) the attrs' diagnostic reads from a cube's centre (at least two window periods
#: plus one, so every in-window position holds four patches), and the queries it draws there: a bounded sample,
#: so the diagnostic every run records costs a few milliseconds, not a share of the run
#: (``benchmarks/bench_overhead.py``). Call :func:`position_stats` on the whole cube for the full figure.
ATTRS_MAX_PATCHES = 32
ATTRS_MAX_QUERIES = 128


def resolve_position(position: str, spec) -> str:
    """``"auto"`` → ``"neutral"`` for models with in-window positions, else ``"raw"``; checks the value."""
    from eoembed.exceptions import ParameterError

    if position not in ("auto", "neutral", "raw"):
        raise ParameterError(
            f"position={position!r} is not one of 'auto', 'neutral', 'raw'. 'neutral' (the default for ViT "
            "families) encodes every token at in-window position (0, 0); 'raw' keeps the model's own positions."
        )
    has = bool(getattr(spec, "window_positions", False))
    if position == "auto":
        return "neutral" if has else "raw"
    if position == "neutral" and not has:
        raise ParameterError(
            f"{spec.name} adds no absolute in-window positions (per-pixel, convolutional, relative/RoPE "
            "positions or weight-free), so its vectors are already position-free; use position='raw' or 'auto'."
        )
    return position


def position_attrs(values, period: int, offset: tuple[int, int]) -> dict:
    """The position-bias diagnostic (:func:`position_stats`) as ``eoembed:position_*`` attrs.

    Measured on at most :data:`ATTRS_MAX_PATCHES` ² patches (more for windows over 15 patches
    wide: two periods plus one) at the cube's centre with :data:`ATTRS_MAX_QUERIES` queries,
    so it costs little on any cube (a dask cube computes
    only that crop). Empty when the crop holds fewer than two patches per in-window position.
    """
    ny, nx = values.shape[-2:]
    m = max(ATTRS_MAX_PATCHES, 2 * int(period) + 1)
    y0, x0 = max(0, (ny - m) // 2), max(0, (nx - m) // 2)
    crop = values[..., y0 : y0 + m, x0 : x0 + m]
    st = position_stats(crop, period=period, offset=(offset[0] + y0, offset[1] + x0), max_queries=ATTRS_MAX_QUERIES,
                        total=False)
    if st is None:
        return {}
    return {
        "eoembed:position_hit_rate": round(st["same_position_rate"], 4),
        "eoembed:position_hit_chance": round(st["same_position_chance"], 4),
        "eoembed:position_pc1_share": round(st["pc1_position_share"], 4),
        "eoembed:position_pc1_share_null": round(st["pc1_position_share_null"], 4),
    }


#: What each ``position`` mode does, for the attrs.
POSITION_METHODS = {
    "neutral": "every token encoded at in-window position (0, 0): no window-position component",
    "raw": "the model's own absolute in-window positions (none for per-pixel/convolutional/weight-free models)",
}
