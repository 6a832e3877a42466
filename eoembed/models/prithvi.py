"""Prithvi-EO encoders (NASA / IBM), pretrained as masked autoencoders on Harmonized
Landsat-Sentinel-2 (HLS).

* **Prithvi-EO-1.0-100M**: ViT-B (768-d, 12 blocks), 16 px patches, 3 frames.
* **Prithvi-EO-2.0-300M** / **-600M**: ViT-L (1024-d, 24 blocks, 16 px) and ViT-H
  (1280-d, 32 blocks, 14 px), 4 frames; the ``-TL`` variants add learned-scale
  temporal (year, day of year) and location (centre lon/lat) encodings.

Bands: the six HLS bands Blue, Green, Red, Narrow NIR, SWIR 1, SWIR 2, read from the
Sentinel-2 bands B02, B03, B04, B8A, B11, B12 (HLS S30 uses exactly these), as
reflectance × 10 000, normalized with the per-band mean/std published with each
version. Tokens are 1 × p × p tubelets (one per patch and timestep); an eoembed patch
is the model's patch, and its vector is the mean of its visible timesteps' tokens
(per timestep with ``pool_time=False``). Patch-timesteps without data are dropped
before the encoder, as in MAE pretraining.

Weights: ``ibm-nasa-geospatial/Prithvi-EO-*`` on Hugging Face, one ``.pt`` state dict
each (v2: ``encoder.*`` + ``decoder.*``; v1: the flat MAE layout). Licence
Apache-2.0. The commit ids and SHA-256 of these files could not be confirmed offline:
the revision is ``main`` until they are pinned.
"""

from __future__ import annotations

import numpy as np

from eoembed.exceptions import CorruptWeightsError
from eoembed.models._encoder import TorchEncoder, load_into, read_checkpoint
from eoembed.models.registry import ModelSpec, PretrainedWeights, WeightFile, register_model

#: HLS band → the Sentinel-2 band it is read from.
HLS_FROM_S2 = {"Blue": "B02", "Green": "B03", "Red": "B04", "Narrow NIR": "B8A", "SWIR1": "B11", "SWIR2": "B12"}
S2_BANDS = tuple(HLS_FROM_S2.values())
# Published normalization (reflectance × 10 000), per HLS band in the order above.
V1_MEAN = np.array([775.0, 1081.0, 1229.0, 2497.0, 2204.0, 1611.0])
V1_STD = np.array([1282.0, 1270.0, 1399.0, 1368.0, 1292.0, 1155.0])
V2_MEAN = np.array([1087.0, 1342.0, 1433.0, 2734.0, 1958.0, 1363.0])
V2_STD = np.array([2248.0, 2179.0, 2178.0, 1850.0, 1242.0, 1049.0])
LICENSE = "Apache-2.0"
REVISION = "main"  # not pinned: the commits holding the .pt files could not be confirmed offline


# name → (version, size, dim, depth, heads, patch, frames, coords, params, repo, file)
_MODELS = {
    "prithvi-eo-1.0-100m": ("1.0", "100m", 768, 12, 12, 16, 3, False, 100_000_000,
                            "ibm-nasa-geospatial/Prithvi-EO-1.0-100M", "Prithvi_EO_V1_100M.pt"),
    "prithvi-eo-2.0-300m": ("2.0", "300m", 1024, 24, 16, 16, 4, False, 304_000_000,
                            "ibm-nasa-geospatial/Prithvi-EO-2.0-300M", "Prithvi_EO_V2_300M.pt"),
    "prithvi-eo-2.0-300m-tl": ("2.0", "300m-tl", 1024, 24, 16, 16, 4, True, 304_000_000,
                               "ibm-nasa-geospatial/Prithvi-EO-2.0-300M-TL", "Prithvi_EO_V2_300M_TL.pt"),
    "prithvi-eo-2.0-600m": ("2.0", "600m", 1280, 32, 16, 14, 4, False, 632_000_000,
                            "ibm-nasa-geospatial/Prithvi-EO-2.0-600M", "Prithvi_EO_V2_600M.pt"),
    "prithvi-eo-2.0-600m-tl": ("2.0", "600m-tl", 1280, 32, 16, 14, 4, True, 632_000_000,
                               "ibm-nasa-geospatial/Prithvi-EO-2.0-600M-TL", "Prithvi_EO_V2_600M_TL.pt"),
}
#: Pretraining image size (pixels); the checkpoint's position grid is 224 // patch.
PRETRAIN_PX = 224


def _make_spec(name: str) -> ModelSpec:
    version, size, dim, depth, heads, patch, frames, coords, params, repo, file = _MODELS[name]
    tl = " with time/location encodings" if coords else ""
    return ModelSpec(
        window_positions=True,  # absolute 2-D positions inside the window
        name=name,
        family="prithvi",
        version=version,
        size=size,
        embedding_dim=dim,
        modalities={"sentinel2_l2a": S2_BANDS},
        required_modalities=("sentinel2_l2a",),
        token_groups={"sentinel2_l2a": 1},
        max_timesteps=frames,
        patch_sizes=(patch,),
        default_patch_size=patch,
        square_tiles=False,
        native_resolution=30.0,  # HLS
        params=params,
        depth=depth,
        num_heads=heads,
        mlp_ratio=4.0,
        weights=PretrainedWeights(
            repo=repo,
            revision=REVISION,
            files=(WeightFile(file),),  # SHA-256 not confirmed offline: hashed and stamped, not checked
            license=LICENSE,
            notes="revision not pinned (the commits holding the .pt files could not be confirmed offline); "
                  "SHA-256 unknown: the file is hashed and stamped, not checked",
        ),
        missing_bands_note=("set to the band's mean (0 after normalization): Prithvi reads no neighbouring "
                            "band to copy from. For a missing B8A, map B08 instead: bands={'B08': 'B8A'}"),
        description=f"Prithvi-EO-{version} {size.upper()} ({dim}-d, {patch} px patches, HLS bands{tl})",
        aliases=(name.replace("prithvi-eo-", "prithvi-"),),
    )


def _arch(spec: ModelSpec) -> dict:
    """Network hyper-parameters from the spec (pretraining frames = max timesteps; sizes
    ending in ``-tl`` have the time/location encodings)."""
    return dict(dim=int(spec.embedding_dim), depth=int(spec.depth), heads=int(spec.num_heads),
                patch=spec.default_patch_size, frames=spec.max_timesteps, coords=spec.size.endswith("-tl"))


def encoder_state(state: dict) -> dict:
    """The encoder's entries of a published checkpoint (v2 ``encoder.*`` or v1 flat)."""
    if any(k.startswith("encoder.") for k in state):
        return {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
    return {k: v for k, v in state.items() if not (k.startswith("decoder") or k == "mask_token")}


def load_prithvi(spec: ModelSpec, weights=None, device: str | None = None) -> "PrithviEncoder":
    """Build the encoder for ``spec`` (caching across calls is :func:`eoembed.models.load_model`'s job)."""
    return PrithviEncoder.load(spec, weights, device)


def day_of_year(timestamps: np.ndarray) -> np.ndarray:
    """``(..., 3)`` (day, month 0–11, year) → ``(..., 2)`` float (year, day of year 1–366)."""
    ts = np.asarray(timestamps, dtype="int64")
    year, month, day = ts[..., 2], ts[..., 1], ts[..., 0]
    start = (year - 1970).astype("datetime64[Y]").astype("datetime64[D]")
    date = (year - 1970).astype("datetime64[Y]").astype("datetime64[M]") + month
    date = date.astype("datetime64[D]") + (day - 1)
    doy = (date - start).astype("int64") + 1
    return np.stack([year, doy], axis=-1).astype("float32")


class PrithviEncoder(TorchEncoder):
    """:class:`eoembed.encode.Encoder` around a Prithvi-EO encoder."""

    stamp_weights_file = True

    def __init__(self, spec, module, device, source, extra=None):
        super().__init__(spec, module, device, source, extra)
        v1 = spec.version == "1.0"
        self.mean, self.std = (V1_MEAN, V1_STD) if v1 else (V2_MEAN, V2_STD)

    @classmethod
    def build_module(cls, spec: ModelSpec, source):
        from eoembed.models._prithvinet import PrithviNet
        from eoembed.models._vit import grid_side

        arch = _arch(spec)
        state = encoder_state(read_checkpoint(source.weights))
        if not arch["coords"]:  # as the reference loader does: a model without them ignores these encoders
            state = {k: v for k, v in state.items()
                     if not k.startswith(("temporal_embed_enc.", "location_embed_enc."))}
        if "pos_embed" not in state:
            raise CorruptWeightsError(
                f"{source.weights} has no encoder 'pos_embed' (keys: {', '.join(sorted(state)[:6])}…): it is not "
                f"a Prithvi checkpoint. Use the {spec.hf_repo} file {spec.weight_files[0].name}."
            )
        n_pos = state["pos_embed"].shape[1] - 1
        if n_pos % arch["frames"]:
            raise CorruptWeightsError(
                f"{source.weights} pos_embed has {n_pos} positions, not a multiple of {spec.name}'s "
                f"{arch['frames']} frames: it is a checkpoint of another Prithvi version."
            )
        grid = grid_side(n_pos // arch["frames"], f"{source.weights} pos_embed")
        net = PrithviNet(bands=len(S2_BANDS), grid=grid, **arch)
        load_into(net, state, source.weights, spec)
        coords = "time (year, day of year) + location (cube centre lon, lat)" if arch["coords"] else "none"
        return net, {"eoembed:coords_encoding": coords}

    def tokens(self, batch):
        """One tubelet token per patch and timestep: ``(B, h, w, T, D)``."""
        import torch

        x = self.tensor(batch.data["sentinel2_l2a"])  # (B, H, W, T, C)
        vis = self.tensor(batch.visible["sentinel2_l2a"])  # (B, h, w, T)
        b, h, w, nt = vis.shape
        x = x.permute(0, 4, 3, 1, 2).contiguous()  # (B, C, T, H, W)
        keep = vis.permute(0, 3, 1, 2).reshape(b, nt * h * w)
        temporal = self.tensor(day_of_year(batch.timestamps))
        lonlat = getattr(batch, "lonlat", None)
        location = None
        if lonlat is not None:
            location = torch.tensor([list(lonlat)] * b, dtype=torch.float32, device=self.device)
        tok = self.module(x, keep, temporal, location, neutral=self.neutral(batch))
        return tok.reshape(b, nt, h, w, -1).permute(0, 2, 3, 1, 4), vis  # (B, h, w, T, D)


for _name in _MODELS:
    register_model(_make_spec(_name), loader=load_prithvi)
