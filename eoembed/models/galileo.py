"""Galileo (NASA Harvest et al., ICML 2025): a multi-modal space-time ViT, MIT-licensed.

What eoembed feeds it, per patch and timestep, as separate tokens (channel groups):
Sentinel-1 ``VV, VH`` (dB); Sentinel-2 RGB ``B02–B04``, red edge ``B05–B07``, NIR 10 m
``B08``, NIR 20 m ``B8A``, SWIR ``B11, B12`` (L2A reflectance × 10 000); and NDVI,
which eoembed computes from B04/B08. A group is masked where its modality has no data
(patch-timestep not visible) or where the cube lacks one of its bands; Galileo's
other inputs (SRTM, ERA5, Dynamic World, location…) are always masked.

Normalization (from the model's ``normalization.json``, key ``"13"``):
``(x − (mean − 2·std)) / (4·std)`` per band; NDVI is used as is. Positions are
absolute inside the window (square, like the model's own 2-D encoding), the month of
each timestep is encoded, patch sizes 1–8 reuse the 8 × 8 projections (FlexiViT
resize). A patch's vector is the mean of its visible tokens over all groups and
timesteps (``pool_time=False``: over groups, per timestep).

Weights: ``galileo-nano`` from github.com/nasaharvest/galileo at a pinned commit
(``data/models/nano/`` + ``config/normalization.json``), SHA-256-checked. Tiny and Base
load from a local folder with the same three files (``weights=PATH`` or
``$EOEMBED_WEIGHTS_DIR/galileo-tiny/``).
"""

from __future__ import annotations

import json

import numpy as np

from eoembed.exceptions import CorruptWeightsError, ParameterError
from eoembed.models._channel_groups import IN_CHANNELS, S2_BANDS, ChannelGroupEncoder, group_arrays, group_visibility
from eoembed.models._encoder import load_into
from eoembed.models.registry import ModelSpec, PretrainedWeights, WeightFile, register_model
from eoembed.models.weights import WeightsSource, load_state_dict
from eoembed.sensors import S1, S1_BANDS, S2

LICENSE = "MIT"
REPO = "github:nasaharvest/galileo"
COMMIT = "d04822911e853668034888a90d490b799fae6929"
_RAW = f"https://raw.githubusercontent.com/nasaharvest/galileo/{COMMIT}"

#: normalization.json key for the 13 space-time bands (VV, VH, 10 × S2, NDVI).
NORM_KEY = "13"

# size → (dim, depth, heads, approx. encoder params)
_SIZES = {"nano": (128, 4, 8, 1_040_000), "tiny": (192, 12, 3, 5_500_000), "base": (768, 12, 12, 86_000_000)}


def _files(size: str) -> tuple[WeightFile, ...]:
    if size == "nano":
        return (
            WeightFile("encoder.pt", "weights",
                       "eab6acacf527886a508a555bc24efe4b4a2cf91b162e84cd1c4a1807e942180c",
                       f"{_RAW}/data/models/nano/encoder.pt"),
            WeightFile("config.json", "config", None, f"{_RAW}/data/models/nano/config.json"),
            WeightFile("normalization.json", "normalization", None, f"{_RAW}/config/normalization.json"),
        )
    return (WeightFile("encoder.pt", "weights"), WeightFile("config.json", "config"),
            WeightFile("normalization.json", "normalization"))


def _make_spec(size: str) -> ModelSpec:
    dim, depth, heads, params = _SIZES[size]
    return ModelSpec(
        window_positions=True,  # absolute 2-D positions inside the window
        name=f"galileo-{size}",
        family="galileo",
        version="1",
        size=size,
        embedding_dim=dim,
        modalities={S2: S2_BANDS, S1: S1_BANDS},
        required_modalities=(S2,),
        token_groups={S2: 6, S1: 1},  # RGB, red edge, NIR 10/20 m, SWIR, NDVI
        max_timesteps=24,
        patch_sizes=tuple(range(1, 9)),
        default_patch_size=4,
        square_tiles=True,
        native_resolution=10.0,
        params=params,
        depth=depth,
        mlp_ratio=4.0,
        num_heads=heads,
        description=f"Galileo {size.capitalize()} ({dim}-d), S1+S2+NDVI channel groups",
        weights=PretrainedWeights(
            repo=REPO if size == "nano" else None,
            revision=COMMIT if size == "nano" else None,
            files=_files(size),
            license=LICENSE,
            dirname=f"galileo-{size}",
            notes="" if size == "nano" else "not published at a pinned commit: weights=PATH with the three files",
        ),
        missing_bands_note="the channel groups holding them are masked (Galileo drops missing groups)",
    )


# --- loading ------------------------------------------------------------------------
# checkpoint parts eoembed never feeds (always-masked groups): present in the file, not built
_UNUSED_PREFIXES = ("space_embed.", "time_embed.", "static_embed.", "sp_channel_embed", "t_channel_embed",
                    "st_channel_embed")


def _read_json(path, what: str) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise CorruptWeightsError(f"{path} is not a readable {what} ({type(err).__name__}: {err}).") from err


def _normalization(source: WeightsSource) -> tuple[np.ndarray, np.ndarray]:
    """Per-band shift and divisor for the 13 space-time bands (NDVI: 0 and 1)."""
    path = source.path("normalization.json")
    stats = _read_json(path, "Galileo normalization.json").get(NORM_KEY)
    try:
        mean = np.asarray(stats["mean"], dtype="float64")
        std = np.asarray(stats["std"], dtype="float64")
        assert mean.shape == std.shape == (13,)
    except (TypeError, KeyError, AssertionError) as err:
        raise CorruptWeightsError(
            f"{path} has no 13-band '{NORM_KEY}' entry with 'mean' and 'std' lists; it must be Galileo's "
            "config/normalization.json."
        ) from err
    shift, div = mean - 2 * std, 4 * std
    shift[12], div[12] = 0.0, 1.0  # NDVI is already in [-1, 1]
    return shift.astype("float32"), div.astype("float32")


def load_galileo(spec: ModelSpec, weights=None, device: str | None = None) -> "GalileoEncoderAdapter":
    """Build the Galileo encoder for ``spec`` (caching across calls is :func:`eoembed.models.load_model`'s job)."""
    return GalileoEncoderAdapter.load(spec, weights, device)


class GalileoEncoderAdapter(ChannelGroupEncoder):
    """:class:`eoembed.encode.Encoder` around :class:`~eoembed.models._galileo_net.GalileoEncoder`."""

    def __init__(self, spec: ModelSpec, module, device: str, source: WeightsSource, extra: dict | None = None):
        super().__init__(spec, module, device, source, extra)
        self.shift, self.div = _normalization(source)

    @classmethod
    def build_module(cls, spec: ModelSpec, source: WeightsSource):
        from eoembed.models._galileo_net import GalileoEncoder

        cfg = _read_json(source.config, "Galileo config.json")
        try:
            enc = cfg["model"]["encoder"]
            dim, depth, heads = int(enc["embedding_size"]), int(enc["depth"]), int(enc["num_heads"])
            mlp, tmax, base = float(enc["mlp_ratio"]), int(enc["max_sequence_length"]), int(enc["max_patch_size"])
        except (KeyError, TypeError, ValueError) as err:
            raise CorruptWeightsError(
                f"{source.config} is not a Galileo config.json (needs model.encoder.embedding_size, depth, "
                f"num_heads, mlp_ratio, max_sequence_length, max_patch_size; {type(err).__name__}: {err})."
            ) from err
        if dim != spec.embedding_dim:
            raise CorruptWeightsError(
                f"the checkpoint at {source.config.parent} is a {dim}-d Galileo encoder, but {spec.name} is "
                f"{spec.embedding_dim}-d. Use the model name that matches the folder (galileo-nano/tiny/base)."
            )
        module = GalileoEncoder(IN_CHANNELS, dim, depth, heads, mlp, tmax, base)
        state = {k.replace(".backbone", ""): v for k, v in load_state_dict(source.weights).items()}
        load_into(module, state, source.weights, spec, unused=_UNUSED_PREFIXES,
                  hint="It must be a Galileo encoder.pt (not the decoder or target encoder).")
        return module, {}

    def tokens(self, batch):
        """Channel-group tokens ``(B, h, w, T, G, D)``, kept where the group was visible."""
        import torch

        vis = group_visibility(self.spec.modalities, batch.visible, batch.present)  # (B, h, w, T, G)
        if vis.shape[1] != vis.shape[2]:
            raise ParameterError(
                f"{self.spec.name} needs square windows (its 2-D positions are absolute), got "
                f"{vis.shape[1]}×{vis.shape[2]} patches; embed() always cuts square tiles."
            )
        groups = {g: self.tensor(a) for g, a in group_arrays(batch.data).items()}
        months = self.tensor(batch.timestamps[..., 1], dtype=torch.long)
        keep = self.tensor(vis)
        tok = self.module(groups, keep, months, batch.patch_size, float(batch.input_res), neutral=self.neutral(batch))
        return tok, keep


for _size in ("nano", "tiny", "base"):
    register_model(_make_spec(_size), loader=load_galileo)
