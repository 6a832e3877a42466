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
from collections import OrderedDict

import numpy as np

from eoembed.exceptions import CorruptWeightsError, ParameterError
from eoembed.models._torchcommon import inference, load_into, resolve_device, to_device
from eoembed.models.registry import ModelSpec, PretrainedWeights, WeightFile, register_model
from eoembed.models.weights import WeightsSource, load_state_dict, provenance_attrs, resolve_weights

LICENSE = "MIT"
REPO = "github:nasaharvest/galileo"
COMMIT = "d04822911e853668034888a90d490b799fae6929"
_RAW = f"https://raw.githubusercontent.com/nasaharvest/galileo/{COMMIT}"

S2 = "sentinel2_l2a"
S1 = "sentinel1"
S2_BANDS = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
S1_BANDS = ("vv", "vh")
#: Token groups in the model's order: name → (modality, bands). NDVI is derived.
GROUPS: "OrderedDict[str, tuple[str, tuple[str, ...]]]" = OrderedDict([
    ("S1", (S1, ("vv", "vh"))),
    ("S2_RGB", (S2, ("B02", "B03", "B04"))),
    ("S2_Red_Edge", (S2, ("B05", "B06", "B07"))),
    ("S2_NIR_10m", (S2, ("B08",))),
    ("S2_NIR_20m", (S2, ("B8A",))),
    ("S2_SWIR", (S2, ("B11", "B12"))),
    ("NDVI", (S2, ("B04", "B08"))),
])
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


def ndvi(s2: np.ndarray) -> np.ndarray:
    """NDVI from ``(..., 10)`` Sentinel-2 values in :data:`S2_BANDS` order (NaN where B04/B08 are)."""
    red, nir = s2[..., S2_BANDS.index("B04")], s2[..., S2_BANDS.index("B08")]
    with np.errstate(divide="ignore", invalid="ignore"):
        total = nir + red
        out = np.where(total != 0, (nir - red) / total, 0.0).astype("float32")
    return np.where(np.isfinite(red) & np.isfinite(nir), out, np.nan).astype("float32")


def group_visibility(spec: ModelSpec, visible: dict[str, np.ndarray], present: dict[str, np.ndarray]) -> np.ndarray:
    """``(B, h, w, T, G)`` bool over :data:`GROUPS`: seen where the modality is and all its bands exist."""
    ref = visible[S2]
    out = []
    for _, (m, bands) in GROUPS.items():
        if m not in visible:
            out.append(np.zeros(ref.shape, bool))
            continue
        names = spec.modalities[m]
        has = all(bool(present[m][names.index(b)]) for b in bands)
        out.append(visible[m] & has)
    return np.stack(out, axis=-1)


def group_arrays(data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Normalized modality arrays (S2 with NDVI as channel 10) → :data:`GROUPS` arrays, NaN → 0."""
    s2 = np.nan_to_num(data[S2])
    s1 = np.nan_to_num(data[S1]) if S1 in data else np.zeros(s2.shape[:-1] + (2,), "float32")
    out = {}
    for g, (m, bands) in GROUPS.items():
        if g == "NDVI":
            arr = s2[..., 10:11]
        elif m == S1:
            arr = s1
        else:
            arr = s2[..., [S2_BANDS.index(x) for x in bands]]
        out[g] = np.ascontiguousarray(arr, dtype="float32")
    return out


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


def _build_module(spec: ModelSpec, source: WeightsSource):
    import torch  # noqa: F401

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
    in_chans = {g: len(bands) if g != "NDVI" else 1 for g, (_, bands) in GROUPS.items()}
    module = GalileoEncoder(in_chans, dim, depth, heads, mlp, tmax, base)
    state = {k.replace(".backbone", ""): v for k, v in load_state_dict(source.weights).items()}
    load_into(module, state, source.weights, spec, unused=_UNUSED_PREFIXES,
              hint="It must be a Galileo encoder.pt (not the decoder or target encoder).")
    module.eval()
    for prm in module.parameters():
        prm.requires_grad_(False)
    return module


def load_galileo(spec: ModelSpec, weights=None, device: str | None = None) -> "GalileoEncoderAdapter":
    """Build the Galileo encoder for ``spec`` (caching across calls is :func:`eoembed.models.load_model`'s job)."""
    device = resolve_device(device)
    source = resolve_weights(spec, weights)
    return GalileoEncoderAdapter(spec, _build_module(spec, source).to(device), device, source)


class GalileoEncoderAdapter:
    """:class:`eoembed.encode.Encoder` around :class:`~eoembed.models._galileo_net.GalileoEncoder`."""

    def __init__(self, spec: ModelSpec, module, device: str, source: WeightsSource):
        self.spec = spec
        self.module = module
        self.device = device
        self.source = source
        self.shift, self.div = _normalization(source)

    # -- Encoder protocol ------------------------------------------------------------
    def normalize(self, modality: str, data: np.ndarray) -> np.ndarray:
        """S1 dB / S2 DN → normalized; for S2 the NDVI (from raw B04, B08) is appended as channel 10."""
        x = np.asarray(data, dtype="float32")
        if modality == S1:
            return (x - self.shift[0:2]) / self.div[0:2]
        if modality != S2:
            raise ValueError(f"Galileo reads sentinel2_l2a and sentinel1, not {modality!r}")
        return np.concatenate([(x - self.shift[2:12]) / self.div[2:12], ndvi(x)[..., None]], axis=-1)

    def token_visibility(self, visible: dict[str, np.ndarray], present: dict[str, np.ndarray]) -> np.ndarray:
        return group_visibility(self.spec, visible, present)

    def group_key(self, visible: dict[str, np.ndarray]) -> int:
        """Visible tokens in the window (equal counts: no padding inside a batch)."""
        return int(sum(v.sum() * self.spec.token_groups[m] for m, v in visible.items()))

    def output_dim(self, plan_bands, ntime, pool_time) -> int:
        return int(self.spec.embedding_dim)

    def encode(self, batch, *, pool_time: bool) -> np.ndarray:
        import torch

        vis = self.token_visibility(batch.visible, batch.present)  # (B, h, w, T, G)
        if vis.shape[1] != vis.shape[2]:
            raise ParameterError(
                f"{self.spec.name} needs square windows (its 2-D positions are absolute), got "
                f"{vis.shape[1]}×{vis.shape[2]} patches; embed() always cuts square tiles."
            )
        groups = {g: to_device(a, self.device) for g, a in group_arrays(batch.data).items()}
        months = to_device(batch.timestamps[..., 1], self.device, dtype=torch.long)
        vis_t = to_device(vis, self.device)
        with inference(self.device, self.spec.family):
            tok = self.module(groups, vis_t, months, batch.patch_size, float(batch.input_res),
                              neutral=getattr(batch, "position", "raw") == "neutral").float()
            keep = vis_t.to(tok.dtype)
            total = (tok * keep[..., None]).sum(dim=4)  # (B, h, w, T, D)
            count = keep.sum(dim=4)  # (B, h, w, T)
            if pool_time:
                total, count = total.sum(dim=3), count.sum(dim=3)
            emb = total / count.clamp(min=1)[..., None]
            emb = torch.where(count[..., None] > 0, emb, torch.full_like(emb, float("nan")))
        return emb.float().cpu().numpy()

    def provenance(self) -> dict:
        return provenance_attrs(self.spec, self.source, self.device)


for _size in ("nano", "tiny", "base"):
    register_model(_make_spec(_size), loader=load_galileo)
