"""Presto (NASA Harvest): a per-pixel time-series transformer, MIT-licensed.

Each pixel's series (T ≤ 24) is embedded on its own — no spatial context — from the
same channel groups as Galileo (Sentinel-1 VV/VH; Sentinel-2 RGB, red edge, NIR 10 m,
NIR 20 m, SWIR; NDVI computed by eoembed), with each timestep's own calendar month
(Presto takes a month per timestep; counting on from the first date, as its monthly
training series do, would mislabel weekly or irregular series) and the pixel's lat/lon (from the cube's CRS). ERA5, SRTM and Dynamic World are always
masked. Normalization: S1 ``(dB + 25) / 25``, S2 ``DN / 10 000``, NDVI as is.

A patch's vector is the mean of the vectors of its pixels that hold data
(``patch_size=1``: one vector per pixel). A pixel-timestep holds data where its patch
does (eoembed's ``min_valid`` rule, small gaps filled with the patch mean). Pixels
with different missing-data patterns are encoded in separate batches, as Presto
requires equal masking within a batch. Presto gives one vector per series, so
``pool_time=False`` is refused.

Weights: ``data/default_model.pt`` of github.com/nasaharvest/presto at a pinned
commit, SHA-256-checked; only its ``encoder.*`` part is used.
"""

from __future__ import annotations

import numpy as np

from eoembed.exceptions import ParameterError
from eoembed.models._channel_groups import IN_CHANNELS, S2_BANDS, ChannelGroupEncoder, group_arrays, group_visibility
from eoembed.models._encoder import load_into
from eoembed.models.registry import ModelSpec, PretrainedWeights, WeightFile, register_model
from eoembed.models.weights import WeightsSource, load_state_dict
from eoembed.sensors import S1, S1_BANDS, S2

LICENSE = "MIT"
COMMIT = "13173d028f035abcbcc3b13829314323a5c15d02"
SHA256 = "559c9d76f525bdf2dd3774da8b1e7f1510769b73baacac12e9e4d8d5c67fbe65"
#: Pixel series per encoder call.
PIXELS_PER_CALL = 8192

SPEC = ModelSpec(
    name="presto",
    family="presto",
    version="1",
    size="default",
    embedding_dim=128,
    modalities={S2: S2_BANDS, S1: S1_BANDS},
    required_modalities=(S2,),
    token_groups={S2: 6, S1: 1},
    max_timesteps=24,
    patch_sizes=tuple(range(1, 17)),
    default_patch_size=4,
    square_tiles=False,
    native_resolution=10.0,
    params=402_000,
    depth=2,
    mlp_ratio=4.0,
    num_heads=8,
    description="Presto (128-d) per-pixel time series, S1+S2+NDVI, patch = mean of pixels",
    weights=PretrainedWeights(
        repo="github:nasaharvest/presto",
        revision=COMMIT,
        files=(WeightFile("default_model.pt", "weights", SHA256,
                          f"https://raw.githubusercontent.com/nasaharvest/presto/{COMMIT}/data/default_model.pt"),),
        license=LICENSE,
        dirname="presto",
    ),
    missing_bands_note="the channel groups holding them are masked (Presto drops missing groups)",
    pixel_series=True,
)

_UNUSED = ("eo_patch_embed.ERA5.", "eo_patch_embed.SRTM.", "dw_embed.")


def load_presto(spec: ModelSpec, weights=None, device: str | None = None) -> "PrestoEncoderAdapter":
    """Build the Presto encoder (caching across calls is :func:`eoembed.models.load_model`'s job)."""
    return PrestoEncoderAdapter.load(spec, weights, device)


def pixel_lonlat(transform, crs_wkt: str, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lon/lat (degrees) of pixel centres ``(rows, cols)`` of a grid with ``transform`` in ``crs``."""
    from eoembed.cube import transformer

    a, b, c, d, e, f = transform
    x = a * (cols + 0.5) + b * (rows + 0.5) + c
    y = d * (cols + 0.5) + e * (rows + 0.5) + f
    return transformer(crs_wkt, "EPSG:4326").transform(x, y)  # per thread: dask workers run blocks in threads


class PrestoEncoderAdapter(ChannelGroupEncoder):
    """:class:`eoembed.encode.Encoder` around :class:`~eoembed.models._presto_net.PrestoEncoder`.

    A patch model whose tokens are its pixels: :meth:`tokens` gives each core patch its
    ``p²`` pixel vectors, and the shared pooling takes their mean. Normalization:
    S1 ``(dB + 25) / 25``, S2 ``DN / 10 000``, NDVI as is.
    """

    shift = np.array([-25.0] * 2 + [0.0] * len(S2_BANDS), dtype="float32")
    div = np.array([25.0] * 2 + [1e4] * len(S2_BANDS), dtype="float32")

    @classmethod
    def build_module(cls, spec: ModelSpec, source: WeightsSource):
        from eoembed.models._presto_net import PrestoEncoder

        state = load_state_dict(source.weights)
        enc = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
        module = PrestoEncoder(IN_CHANNELS, spec.embedding_dim, spec.depth, spec.num_heads, spec.mlp_ratio,
                               spec.max_timesteps)
        load_into(module, enc, source.weights, spec, unused=_UNUSED,
                  hint="It must be Presto's default_model.pt (a state dict with encoder.* keys).")
        return module, {}

    def group_key(self, visible) -> int:
        return 0  # pixels are encoded alone: tiles never influence each other

    def output_dim(self, plan_bands, ntime, pool_time) -> int:
        if not pool_time:
            raise ParameterError(
                "presto gives one vector per pixel time series, not one per timestep; use pool_time=True "
                "(or a model with per-timestep tokens such as galileo-nano)."
            )
        return int(self.spec.embedding_dim)

    def tokens(self, batch):
        """Pixel vectors as tokens: ``(B, h, w, 1, p², D)``, kept where the pixel holds data.

        Only the core patches are encoded (the halo gives a per-pixel model no context);
        pixels sharing one missing-data pattern are encoded together, as Presto requires.
        """
        import torch

        if batch.transform is None or batch.crs is None or batch.origins is None:
            raise ParameterError("presto needs each pixel's location: the tile batch carries no transform/CRS")
        p, hp = batch.patch_size, batch.halo // batch.patch_size  # halo in pixels → patches
        vis = group_visibility(self.spec.modalities, batch.visible, batch.present)  # (B, h, w, T, G)
        b, h, w, t, g = vis.shape
        core = slice(hp, h - hp)
        vis_c = vis[:, core, core]  # (B, hc, wc, T, G)
        hc, wc = vis_c.shape[1:3]
        pix_vis = np.repeat(np.repeat(vis_c, p, axis=1), p, axis=2).reshape(-1, t, g)  # one row per core pixel
        arrays = {k: a[:, hp * p: (h - hp) * p, hp * p: (w - hp) * p].reshape(-1, t, a.shape[-1])
                  for k, a in group_arrays(batch.data).items()}
        bi, ri, ci = np.unravel_index(np.arange(pix_vis.shape[0]), (b, hc * p, wc * p))
        rows = batch.origins[bi, 0] + hp * p + ri
        cols = batch.origins[bi, 1] + hp * p + ci
        has = pix_vis.any(axis=(1, 2))
        lon, lat = pixel_lonlat(batch.transform, batch.crs, rows[has], cols[has])
        latlon = np.stack([lat, lon], axis=-1).astype("float32")
        idx = np.flatnonzero(has)
        # each timestep's own month (0-11); eoembed.validate has sorted the cube's dates
        months = self.tensor(np.asarray(batch.timestamps[0, :, 1], dtype="int64") % 12, dtype=torch.long)

        d = int(self.spec.embedding_dim)
        out = torch.zeros(pix_vis.shape[0], d, device=self.device)
        packed = np.packbits(pix_vis[idx].reshape(len(idx), -1), axis=1)
        patterns, which = np.unique(packed, axis=0, return_inverse=True)
        for k in range(len(patterns)):
            members = np.flatnonzero(which.reshape(-1) == k)
            vis_k = self.tensor(pix_vis[idx[members[0]]])
            for s in range(0, len(members), PIXELS_PER_CALL):
                sel = members[s: s + PIXELS_PER_CALL]
                x = {gname: self.tensor(a[idx[sel]]) for gname, a in arrays.items()}
                emb = self.module(x, vis_k, months[None].expand(len(sel), -1), self.tensor(latlon[sel]))
                out[self.tensor(idx[sel])] = emb.float()

        def patches(a):  # (B·hc·p·wc·p, ...) pixel rows → (B, h, w, 1, p², ...), zero in the halo
            a = a.reshape(b, hc, p, wc, p, *a.shape[1:]).transpose(2, 3).reshape(b, hc, wc, 1, p * p, *a.shape[1:])
            full = a.new_zeros((b, h, w, 1, p * p, *a.shape[5:]))
            full[:, core, core] = a
            return full

        return patches(out), patches(self.tensor(has))


register_model(SPEC, loader=load_presto)
