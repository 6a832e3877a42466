"""The ``spectral`` baseline: no weights, no torch.

Each patch is described by the mean and standard deviation of every band at every
timestep (reflectance 0–1 for Sentinel-2, dB/10 for Sentinel-1). It is a *baseline*:
use it to see what a learned encoder adds, and for fast tests. With ``pool_time``
(the default) the per-timestep features are concatenated, ``2 × bands × T`` values;
a timestep without data takes the patch's mean over its valid timesteps.
"""

from __future__ import annotations


import numpy as np

from eoembed.models.registry import ModelSpec, register_model
from eoembed.models.weights import provenance_attrs
from eoembed.sensors import S1_BANDS, S2_BANDS

SPEC = ModelSpec(
    name="spectral",
    family="spectral",
    version="1",
    size="baseline",
    embedding_dim=None,
    modalities={"sentinel2_l2a": S2_BANDS, "sentinel1": S1_BANDS},
    required_modalities=("sentinel2_l2a",),
    token_groups={"sentinel2_l2a": 1, "sentinel1": 1},
    max_timesteps=366,
    patch_sizes=tuple(range(1, 65)),
    default_patch_size=4,
    square_tiles=False,
    description="Baseline: per-patch band means/stds per timestep (no weights)",
)


class SpectralEncoder:
    """:class:`eoembed.encode.Encoder` computing per-patch band statistics."""

    def __init__(self, spec: ModelSpec = SPEC):
        self.spec = spec

    def normalize(self, modality: str, data: np.ndarray) -> np.ndarray:
        scale = 1e-4 if modality == "sentinel2_l2a" else 0.1
        return (data * np.float32(scale)).astype("float32")

    def group_key(self, visible) -> int:
        return 0  # tiles never influence each other

    def output_dim(self, plan_bands, ntime, pool_time) -> int:
        nb = sum(sum(1 for s in src if s >= 0) for src in plan_bands.values())
        return 2 * nb * (ntime if pool_time else 1)

    def encode(self, batch, *, pool_time: bool) -> np.ndarray:
        p = batch.patch_size
        feats = []
        for m, x in batch.data.items():
            x = x[..., batch.present[m]]  # bands the cube has (absent ones carry no information)
            b, hh, ww, t, c = x.shape
            v = x.reshape(b, hh // p, p, ww // p, p, t, c)
            # patches without a valid pixel get NaN by hand: numpy would warn ("Degrees of freedom <= 0"), and
            # silencing that with catch_warnings is not thread-safe (dask runs blocks in threads); the other
            # patches go through the same nanmean/nanstd as before, so their values are unchanged
            empty = np.isnan(v).all(axis=(2, 4))
            if empty.any():
                v = np.where(np.expand_dims(empty, (2, 4)), np.float32(0), v)
            f = np.concatenate([np.nanmean(v, axis=(2, 4)), np.nanstd(v, axis=(2, 4))], axis=-1)
            f[np.concatenate([empty, empty], axis=-1)] = np.nan
            f[~batch.visible[m]] = np.nan  # (B, h, w, T, 2C)
            feats.append(f)
        f = np.concatenate(feats, axis=-1)
        if not pool_time:
            return f.astype("float32")
        never = np.isnan(f).all(axis=3, keepdims=True)  # no valid timestep: stays NaN (no empty-slice warning)
        fill = np.nanmean(np.where(never, np.float32(0), f), axis=3, keepdims=True)  # mean over valid timesteps
        f = np.where(np.isnan(f), np.where(never, np.nan, fill), f)
        bsz, h, w, t, d = f.shape
        return f.reshape(bsz, h, w, t * d).astype("float32")

    def provenance(self) -> dict:
        return provenance_attrs(self.spec, None, "cpu")


def load_spectral(spec: ModelSpec, weights=None, device=None) -> SpectralEncoder:
    return SpectralEncoder(spec)


register_model(SPEC, loader=load_spectral)
