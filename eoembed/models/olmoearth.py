"""The OlmoEarth encoders (Allen Institute for AI) through ``olmoearth-pretrain-minimal``.

Versions and what differs for eoembed:

* **v1** (Nano/Tiny/Base/Large): Sentinel-2 is tokenized as 3 band groups
  (10/20/60 m), so 3 tokens per patch per timestep; absolute 2-D position
  encodings, so tiles must be square. Missing bands are copied from the nearest
  band in wavelength (the package's ``NormalizerV1``).
* **v1.1** (Nano/Tiny/Base): one token per patch per timestep (~3x cheaper); trained
  with band dropout, missing bands are set to 0 (``NormalizerV1_1``); square tiles.
* **v1.2** (Nano/Tiny/Small/Base): as v1.1 with RoPE position encodings, so
  rectangular tiles are allowed.

Weights: ``allenai/OlmoEarth-v1{,_1,_2}-<Size>`` on Hugging Face, pinned to the
revisions below. They, and every embedding computed with them, fall under the
OlmoEarth Artifact License.
"""

from __future__ import annotations

import json
import threading
import warnings
from pathlib import Path

import numpy as np

from eoembed.exceptions import CorruptWeightsError, MissingOptionalDependency
from eoembed.models._encoder import TorchEncoder
from eoembed.models.registry import ModelSpec, PretrainedWeights, WeightFile, register_model
from eoembed.models.weights import WeightsSource, _first_line, load_state_dict
from eoembed.sensors import LANDSAT_BANDS, S1_BANDS, S2_BANDS

LICENSE = "OlmoEarth Artifact License"

# size → (embedding dim, depth); params are approximate encoder sizes
_SIZES = {"nano": (128, 4), "tiny": (192, 12), "small": (384, 12), "base": (768, 12), "large": (1024, 24)}
_PARAMS = {"nano": 1_700_000, "tiny": 12_500_000, "small": 40_000_000, "base": 90_000_000, "large": 300_000_000}

# Hugging Face commits the weights are read from (pinned: a moved branch cannot change results).
_REVISIONS = {
    ("v1", "nano"): "529248a4dc3c54014c56b7504641cec98de31d1c",
    ("v1", "tiny"): "885784437d4e2d632b7bf51b4233426c6f4479dc",
    ("v1", "base"): "4bd1392a4539404d2c74276c39f3cb4cfff466cc",
    ("v1", "large"): "b2c9f41de3d8454cb37f0cd9cc3e79ec7c4af435",
    ("v1.1", "nano"): "6c16c7da0d05a1c4f32c2a7f9233e07c9ebfa61a",
    ("v1.1", "tiny"): "74fab5714f763d6b94f8b1536bdd3300d77f45e8",
    ("v1.1", "base"): "4ef31d45f80c1d4fcce18f9cde40c1b5e4d96cf4",
    ("v1.2", "nano"): "e1f693ae2a7d5b57871a978e9d09e22d05206747",
    ("v1.2", "tiny"): "12a9fdbfeff905d7e147e7497f9f7a95c518eefc",
    ("v1.2", "small"): "a207c9a789483f95de1e9fb06acadb3da3775863",
    ("v1.2", "base"): "581aa9baaa7aed4348c0903617eb92ee9f89e2ec",
}
# SHA-256 of (config.json, weights.pth) at those revisions, as published in TorchGeo's
# torchgeo/models/olmoearth.py (same repos and commits).
_SHA256 = {
    ("v1", "nano"): ("088f5314909cfcfd75c2ba4b07c9f88f5ca919d88235b702467046f5fab3a35a",
                     "795c68419a658fd22ccf8f2e020607675f963e9ef3b93d8e368bb17646765347"),
    ("v1", "tiny"): ("975dc2d755688c3010f9fecb662b62784d335731d701d8dda3f9ea0ccec88781",
                     "66b9827af383bc444d7909a406a5b62c072bb08d6804ff47a247c2dce8fad9a4"),
    ("v1", "base"): ("bd7759b9185f3d51607ca8d554c9be6ca87d932bc46fbc0f75524b0c3d5512bf",
                     "551c1cc53337c6faaddead88071d7ebd2bd53ec271600fa6f0ee0a518c8b6e11"),
    ("v1", "large"): ("bd5f0fe3f571cf8beed64072d6c0029d6072223e6dce0b84b689c34d6638bbf1",
                      "1adb5026bd520c54bc415a1282386954927623bab81d01be2f5b6379cc039035"),
    ("v1.1", "nano"): ("7a7cbd2b1b06e500869e9bc00293ec0714a50da92676dc8ac9b1cf026da470bd",
                       "883561154dd4eb874a3e28bb0559c15aa06bd8a2e4ffb54a0d6bc4bc15777eb3"),
    ("v1.1", "tiny"): ("01dcb438144d8f70647ab2d11aef656a1632f3b5af1fdf9263c111127ad7bbc3",
                       "2a3fe8132adf9ff2ca96d00c9e376b8925bfe430fda6140749b3b92764c67ae1"),
    ("v1.1", "base"): ("c74db2ea8c80b7568da926826e4f6cbca7e8cd1a2d0af45568f94af82722d336",
                       "37fc73d542618f28357583fd17307002a4bdfb5321142c08e928102341105989"),
    ("v1.2", "nano"): ("4cd2888e79dc543f262cc3d86fcd30d667068fd53a728ca5bd306d5ddb509d1d",
                       "2773fca48c238d78adde5e83b7d140a63d36c9e5f73746b8dbadaed743020378"),
    ("v1.2", "tiny"): ("bb11f91f5afbd6138f75feee3f66fc0e272da089d05a6e515713c799057155ac",
                       "835c0b21ab010c4c4515faafa44dc1a41c9bc512d3a30af184803c4f4257697d"),
    ("v1.2", "small"): ("254703d9b5da4a6679003ff21f2da964a25d903fea70dc0b2cce5d0cd388f70b",
                        "459796ed5680bc85926f9a0e023476d14cb637bc19f826575c43836c909a5fa6"),
    ("v1.2", "base"): ("0d531a67ad3e477e7011efabcceb01ed80f430aa0a0a3d344fe18cec0f229b8a",
                       "57f7b66faf206db1307670673839e639d3a19c305f6ad968c62392ad3e88deec"),
}
# short names mean v1.1, the cheapest per token
_SHORT = {("v1.1", "nano"): "nano", ("v1.1", "tiny"): "tiny", ("v1.1", "base"): "base"}


def _repo(version: str, size: str) -> str:
    v = {"v1": "v1", "v1.1": "v1_1", "v1.2": "v1_2"}[version]
    return f"allenai/OlmoEarth-{v}-{size.capitalize()}"


def _make_spec(version: str, size: str) -> ModelSpec:
    dim, depth = _SIZES[size]
    name = f"olmoearth-{version}-{size}"
    aliases = [f"olmoearth-{version.replace('.', '_')}-{size}"] if "." in version else []
    if (version, size) in _SHORT:
        aliases.append(_SHORT[(version, size)])
    return ModelSpec(
        # v1/v1.1 add absolute 2-D sin-cos positions; v1.2 rotates attention by relative positions (3-D RoPE)
        window_positions=version != "v1.2",
        name=name,
        family="olmoearth",
        version=version,
        size=size,
        embedding_dim=dim,
        modalities={"sentinel2_l2a": S2_BANDS, "sentinel1": S1_BANDS, "landsat": LANDSAT_BANDS},
        required_modalities=("sentinel2_l2a",),
        token_groups={"sentinel2_l2a": 3 if version == "v1" else 1, "sentinel1": 1,
                      "landsat": 2 if version == "v1" else 1},
        max_timesteps=12,
        patch_sizes=tuple(range(1, 9)),
        default_patch_size=4,
        square_tiles=version in ("v1", "v1.1"),
        native_resolution=10.0,
        params=_PARAMS[size],
        depth=depth,
        needs_dates=True,
        description=f"OlmoEarth {version} {size.capitalize()} ({dim}-d)",
        aliases=tuple(aliases),
        weights=PretrainedWeights(
            repo=_repo(version, size),
            revision=_REVISIONS[(version, size)],
            files=(
                WeightFile("config.json", role="config", sha256=_SHA256[(version, size)][0], required=False),
                WeightFile("weights.pth", role="weights", sha256=_SHA256[(version, size)][1]),
            ),
            license=LICENSE,
        ),
    )


# --- loading ------------------------------------------------------------------------


def _require_package():
    try:
        import olmoearth_pretrain_minimal  # noqa: F401
        import torch  # noqa: F401
    except ImportError as err:
        raise MissingOptionalDependency(
            "OlmoEarth models need torch and olmoearth-pretrain-minimal. On a CPU machine: "
            "pip install torch==2.13.0 && pip install 'eoembed[models]'"
        ) from err


def _config_version(encoder_config: dict) -> str:
    """Tell v1 / v1.1 / v1.2 apart from a checkpoint's encoder config."""
    if not encoder_config.get("use_linear_patch_embed") and not encoder_config.get("tokenization_config"):
        return "v1"
    return "v1.2" if "rope" in str(encoder_config.get("position_encoding", "")) else "v1.1"


def _build_module(spec: ModelSpec, source: WeightsSource):
    """Build the architecture (from config.json when present) and load the state dict."""
    _require_package()
    from olmoearth_pretrain_minimal import OlmoEarthPretrain_v1, load_model_from_path

    if source.config is not None:
        try:
            cfg = json.loads(Path(source.config).read_text())
            emb = cfg["model"]["encoder_config"]["embedding_size"]
        except (ValueError, KeyError, TypeError) as err:
            raise CorruptWeightsError(
                f"{source.config} is not an OlmoEarth config.json ({type(err).__name__}: {err})."
            ) from err
        found = _config_version(cfg["model"]["encoder_config"])
        if found != spec.version:
            raise CorruptWeightsError(
                f"the checkpoint at {source.config.parent} is an OlmoEarth {found} model, but "
                f"{spec.name} is {spec.version}. Use model='olmoearth-{found}-{spec.size}' or the "
                f"{spec.hf_repo} weights."
            )
        if emb != spec.embedding_dim:
            raise CorruptWeightsError(
                f"the checkpoint at {source.config.parent} is for a {emb}-d encoder, but "
                f"{spec.name} is {spec.embedding_dim}-d. Pick the matching model name or the "
                "right weights folder."
            )
        model = load_model_from_path(source.config.parent, load_weights=False)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = OlmoEarthPretrain_v1(spec.size, spec.version).model
        model.encoder.restrict_input_modalities(list(spec.modalities))
    state = load_state_dict(source.weights)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CorruptWeightsError(
            f"{source.weights} does not fit {spec.name}: {_first_line(str(err))}… "
            "Check that the weights are for this model version and size."
        ) from err
    del state
    return model.encoder


def load_olmoearth(spec: ModelSpec, weights=None, device: str | None = None) -> "OlmoEarthEncoder":
    """Build the encoder for ``spec`` (cached per process by :func:`eoembed.models.load_model`)."""
    return OlmoEarthEncoder.load(spec, weights, device)


#: Per-thread switch read by the wrapped 2-D position encoder (``position="neutral"``).
_NEUTRAL = threading.local()


def _install_neutral_positions() -> None:
    """Wrap the package's 2-D position encoding once, so a thread-local flag can make it constant.

    The olmoearth package computes its window positions with
    ``flexi_vit.get_2d_sincos_pos_encoding_with_resolution`` at every call; the wrapper
    returns the package's own result unless this thread asked for neutral positions, in
    which case every position takes the encoding of position (0, 0). Other threads and
    ``position="raw"`` calls see the package unchanged.
    """
    from olmoearth_pretrain_minimal.olmoearth_pretrain_v1.nn import flexi_vit

    orig = flexi_vit.get_2d_sincos_pos_encoding_with_resolution
    if getattr(orig, "_eoembed_neutral", False):
        return

    def positions(grid_size, res, encoding_dim, device, cls_token=False):
        out = orig(grid_size, res, encoding_dim, device, cls_token=cls_token)
        if cls_token or not getattr(_NEUTRAL, "on", False):  # the encoder never asks for a cls position
            return out
        return out[:, :1].expand(-1, out.shape[1], -1)  # (n, h*w, D): flat index 0 is position (0, 0)

    positions._eoembed_neutral = True
    flexi_vit.get_2d_sincos_pos_encoding_with_resolution = positions


#: Serialises the warning filter around OlmoEarth v1's band-copy note (see :meth:`OlmoEarthEncoder.normalize`).
_QUIET_FILL = threading.Lock()


def _no_zero_fill_note(*args, **kwargs) -> None:
    """Stands in for the package normalizer's zero-fill warning (see :class:`OlmoEarthEncoder`)."""


class OlmoEarthEncoder(TorchEncoder):
    """:class:`eoembed.encode.Encoder` around an OlmoEarth encoder module."""

    def __init__(self, spec: ModelSpec, module, device: str, source: WeightsSource, extra: dict | None = None):
        from olmoearth_pretrain_minimal import NormalizerV1, NormalizerV1_1, NormalizerV1_2

        super().__init__(spec, module, device, source, extra)
        norm_cls = {"v1": NormalizerV1, "v1.1": NormalizerV1_1, "v1.2": NormalizerV1_2}[spec.version]
        if spec.window_positions:
            _install_neutral_positions()  # once per process; raw calls see the package's own encoder
        self._normalizer = norm_cls()
        # The package warns (UserWarning) whenever a band it zero-fills was missing at some pixel. eoembed
        # masks those tokens itself and reports missing bands once per call, so this instance's note is
        # switched off where it is made: thread-safe, unlike a catch_warnings around each call, which let
        # one escape from a threaded dask run (CI, 2026-12-07).
        self._normalizer._warn_zeroed = _no_zero_fill_note

    @classmethod
    def build_module(cls, spec: ModelSpec, source: WeightsSource):
        return _build_module(spec, source), {}

    def normalize(self, modality: str, data: np.ndarray) -> np.ndarray:
        """The package's own per-version normalizer and missing-band fill."""
        from olmoearth_pretrain_minimal.olmoearth_pretrain_v1.utils.constants import Modality

        if self.spec.version != "v1":
            out = self._normalizer.normalize(Modality.get(modality), data)
        else:  # v1 fills a missing band from its nearest neighbour in wavelength, and a module function of the
            # package says so on each call; eoembed lists filled bands once per run (attrs and its own warning).
            # catch_warnings is process-wide, so eoembed's calls take turns (the lock): two of them interleaving
            # would leave a filter in place or let the note escape.
            with _QUIET_FILL, warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=r"Up to \d+ of the \d+ \S+ bands were copied",
                                        category=UserWarning)
                out = self._normalizer.normalize(Modality.get(modality), data)
        return np.asarray(out, dtype="float32")

    def tokens(self, batch):
        """Every modality's band-group tokens side by side: ``(B, h, w, T, ΣS, D)``."""
        import torch
        from olmoearth_pretrain_minimal.olmoearth_pretrain_v1.utils.datatypes import (
            MaskedOlmoEarthSample,
            MaskValue,
        )

        p = batch.patch_size
        fields = {"timestamps": self.tensor(batch.timestamps)}
        for m, x in batch.data.items():
            vis = batch.visible[m]  # (B, h, w, T)
            pix = np.repeat(np.repeat(vis, p, axis=1), p, axis=2)  # (B, H, W, T)
            mask = np.where(pix, MaskValue.ONLINE_ENCODER.value, MaskValue.MISSING.value)
            mask = np.repeat(mask[..., None], self.spec.token_groups[m], axis=-1)
            fields[m] = self.tensor(x)
            fields[f"{m}_mask"] = self.tensor(mask)
        sample = MaskedOlmoEarthSample(**fields)
        # every token visible: skip token removal/re-insertion (same numbers, ~5 % faster)
        fast = all(bool(v.all()) for v in batch.visible.values())
        _NEUTRAL.on = self.neutral(batch)
        try:
            out = self.module(sample, patch_size=p, input_res=batch.input_res, fast_pass=fast)
        finally:
            _NEUTRAL.on = False
        tam = out["tokens_and_masks"]
        tok = torch.cat([getattr(tam, m) for m in batch.data], dim=-2)  # (B, h, w, T, S, D) per modality
        keep = torch.cat([getattr(tam, f"{m}_mask") == MaskValue.ONLINE_ENCODER.value for m in batch.data], dim=-1)
        return tok, keep


for _version, _sizes in {
    "v1": ("nano", "tiny", "base", "large"),
    "v1.1": ("nano", "tiny", "base"),
    "v1.2": ("nano", "tiny", "small", "base"),
}.items():
    for _size in _sizes:
        register_model(_make_spec(_version, _size), loader=load_olmoearth)
