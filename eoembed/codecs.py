"""The int8 codecs of embedding products: one module for every quantization rule eoembed reads or writes.

Stores layer: numpy (or dask) in, numpy (or dask) out; no file I/O, no knowledge of
formats. :mod:`eoembed.products` decodes published products with it and
:mod:`eoembed.export` encodes cubes with it, so a rule (scale, nodata, masking) has one
definition.

* **AlphaEarth** (Google/DeepMind Satellite Embedding, annual COGs): ``q = round(sign(v) *
  sqrt(|v|) * 127.5)`` clipped to ±127, nodata ``-128`` in every band of a masked
  pixel; decoded ``sign(q) * (|q| / 127.5) ** 2`` and renormalised to unit length
  (https://developers.google.com/earth-engine/guides/aef_on_gcs_readme). A file may
  also declare another nodata (``-127`` is seen in re-exports): pass it as ``nodata=``.
* **TESSERA** (University of Cambridge): int8 channels times a per-pixel float32
  scale (geotessera's ``dequantize_embedding``). A pixel is no data when its scale
  is 0, NaN (water in geotessera's Zarr store), infinite (land not yet filled),
  negative, or at least :data:`TESSERA_MAX_SCALE` (geotessera marks empty pixels with
  the largest float32, ~3.4e38, which times a channel overflows to ±inf); and when
  every channel is 0 (no observation: the model wrote a zero vector).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "ALPHAEARTH_NODATA", "TESSERA_MAX_SCALE", "dequantize_alphaearth", "dequantize_tessera", "quantize_alphaearth",
    "quantize_unit_int8", "tessera_valid_scale",
]  # fmt: skip

#: AlphaEarth nodata (every band of a masked pixel).
ALPHAEARTH_NODATA = -128
#: AlphaEarth's quantization constant.
AEF_SCALE = 127.5
#: TESSERA scales at or above this are no data, not scales. Real scales are O(0.01-10);
#: geotessera writes the largest float32 (3.4028235e38) for pixels it has no vector for.
TESSERA_MAX_SCALE = 1e30


def where(cond, a, b):
    """``np.where`` that stays lazy when any operand is a dask array."""
    if hasattr(cond, "dask") or hasattr(b, "dask") or hasattr(a, "dask"):
        import dask.array as da

        return da.where(cond, a, b)
    return np.where(cond, a, b)


# --------------------------------------------------------------------------------------
# AlphaEarth
# --------------------------------------------------------------------------------------
def dequantize_alphaearth(q, *, renormalize: bool = True, axis: int = 0, nodata: float | None = None):
    """AlphaEarth int8 → float32: ``sign(q) * (|q| / 127.5) ** 2``, ``-128`` → NaN.

    Works on numpy and dask arrays. With ``renormalize`` each vector (along ``axis``)
    is scaled back to unit length — the product's vectors are unit length before
    quantization, and rounding moves them slightly off it. ``nodata``: a value the file
    declares besides ``-128`` (e.g. ``-127``); a vector with it in every band is masked.
    """
    qf = q.astype(np.float32)
    v = (qf / np.float32(AEF_SCALE)) ** 2 * np.sign(qf)
    masked = (q == ALPHAEARTH_NODATA).any(axis=axis, keepdims=True)
    if nodata is not None and np.isfinite(nodata) and int(nodata) != ALPHAEARTH_NODATA:
        masked = masked | (q == int(nodata)).all(axis=axis, keepdims=True)
    v = where(masked, np.float32(np.nan), v)
    if renormalize:
        n = (v * v).sum(axis=axis, keepdims=True) ** 0.5
        v = v / where(n > 0, n, np.float32(1))
    return v.astype(np.float32)


def quantize_alphaearth(v, *, axis: int = 0):
    """Float vectors (unit length) → AlphaEarth int8: ``round(sign(v) * sqrt(|v|) * 127.5)``.

    The inverse of :func:`dequantize_alphaearth`, clipped to ``[-127, 127]``;
    vectors with any NaN become ``-128`` in every band.
    """
    v = v.astype(np.float32)
    q = np.clip(np.round(np.sign(v) * np.sqrt(np.abs(v)) * np.float32(AEF_SCALE)), -127, 127)
    bad = (~np.isfinite(v)).any(axis=axis, keepdims=True)
    return where(bad, np.float32(ALPHAEARTH_NODATA), np.nan_to_num(q)).astype(np.int8)


def quantize_unit_int8(v, *, axis: int = 0):
    """Any float vectors → unit length → AlphaEarth int8 (what ``embeddings_to_cog(quantize="int8")`` writes).

    Magnitudes are not kept; an all-zero vector stays zero (it is not rescaled).
    """
    v = v.astype(np.float32)
    n = (v * v).sum(axis=axis, keepdims=True) ** 0.5
    return quantize_alphaearth(v / where(n > 0, n, np.float32(1)), axis=axis)


# --------------------------------------------------------------------------------------
# TESSERA
# --------------------------------------------------------------------------------------
def tessera_valid_scale(s):
    """True where a TESSERA scale is a scale (finite, > 0, below :data:`TESSERA_MAX_SCALE`)."""
    return np.isfinite(s) & (s > 0) & (s < np.float32(TESSERA_MAX_SCALE))


def dequantize_tessera(q, scales):
    """TESSERA int8 ``(..., C, H, W)`` channels-first × ``scales`` ``(H, W)``, ``(C, H, W)`` or ``(..., H, W)``.

    ``scales`` with one dimension fewer than ``q`` is per pixel (broadcast over the
    channels). NaN where the pixel is no data (see the module docstring): any channel's
    scale invalid, or every channel 0.
    """
    s = scales.astype(np.float32)
    if s.ndim == q.ndim - 1:
        s = s[..., None, :, :]
    ok = tessera_valid_scale(s)
    v = q.astype(np.float32) * where(ok, s, np.float32(0))
    bad = ~ok.all(axis=-3, keepdims=True) | (q == 0).all(axis=-3, keepdims=True)
    return where(bad, np.float32(np.nan), v).astype(np.float32)
