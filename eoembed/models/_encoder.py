"""The one encoder adapter every torch family uses: tokens in → per-patch vectors out.

:class:`TorchEncoder` implements :class:`eoembed.encode.Encoder` once: finding the
weights, building and freezing the module on its device, the per-band normalizer,
the inference context (``inference_mode`` + bf16 autocast where the family allows
it), pooling the family's tokens into per-patch vectors and the provenance attrs. A
family (Galileo, Presto, OlmoEarth, Prithvi-EO, ViT-MAE, PhilEO) subclasses it and
supplies only what differs:

* :meth:`TorchEncoder.build_module` — the architecture and its state dict;
* :meth:`TorchEncoder.tokens` — one batch of tiles → token vectors
  ``(B, h, w, T, G, D)`` and which of them are real (``(B, h, w, T, G)``), where
  ``G`` is the family's tokens per patch and timestep (channel groups, modalities,
  or, for a per-pixel model such as Presto, the pixels of the patch);
* and where needed its own :meth:`~TorchEncoder.normalize`,
  :meth:`~TorchEncoder.group_key` or :meth:`~TorchEncoder.output_dim`.

A patch's vector is the mean of its real tokens over ``G`` and, with
``pool_time=True``, over time; NaN where it has none. Checkpoint helpers
(:func:`load_into`, :func:`read_checkpoint`) live here too. Torch is imported at
call time, never when this module is imported.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from eoembed.exceptions import CorruptWeightsError
from eoembed.models._torchcommon import inference, require_torch, resolve_device, to_device
from eoembed.models.registry import ModelSpec
from eoembed.models.weights import WeightsSource, load_state_dict, provenance_attrs, resolve_weights
from eoembed.sensors import S2_WAVELENGTHS


# --- checkpoints --------------------------------------------------------------------
def _short(keys, n: int = 6) -> str:
    keys = sorted(keys)
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def load_into(module, state: dict, path: Path, spec: ModelSpec, *, optional: tuple[str, ...] = (),
              unused: tuple[str, ...] = (), hint: str = "") -> None:
    """``module.load_state_dict(state)`` with a typed error naming what does not fit.

    ``optional`` lists key prefixes the checkpoint may lack (the module keeps its value);
    ``unused`` lists prefixes of checkpoint keys the encoder does not use (ignored);
    ``hint`` replaces the generic last sentence of the error.
    """
    own = module.state_dict()
    missing = [k for k in own if k not in state and not k.startswith(optional)]
    unexpected = [k for k in state if k not in own and not k.startswith(unused)]
    shapes = [f"{k} {tuple(state[k].shape)} (expected {tuple(own[k].shape)})"
              for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys: {_short(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_short(unexpected)}")
        if shapes:
            parts.append(f"wrong shapes: {_short(shapes, 3)}")
        raise CorruptWeightsError(
            f"{path} does not fit {spec.name} ({'; '.join(parts)}). " + (hint or (
                f"Check that the file is the published {spec.family} checkpoint for this model size, "
                "complete and not truncated."))
        )
    module.load_state_dict({k: state[k] for k in own if k in state}, strict=False)


def read_checkpoint(path: Path) -> dict:
    """``weights.load_state_dict`` plus unwrapping of ``{"model": state_dict}`` (MAE/DeiT style)."""
    state = load_state_dict(path)
    if "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    elif "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    bad = [k for k, v in state.items() if not hasattr(v, "shape")]
    if bad:
        raise CorruptWeightsError(f"{path} holds non-tensor entries {_short(bad)}; expected a tensor state dict.")
    return state


# --- normalization ------------------------------------------------------------------
def fill_nearest_band(data: np.ndarray, bands: tuple[str, ...]) -> np.ndarray:
    """Copy a missing band value (NaN while other bands hold data) from the nearest band in
    wavelength (:data:`eoembed.sensors.S2_WAVELENGTHS`) that has one, e.g. B8A from B08
    when the cube has no B8A."""
    data = np.array(data, dtype="float32", copy=True)
    finite = np.isfinite(data)
    if finite.all() or not finite.any():
        return data
    for i, b in enumerate(bands):
        hole = ~finite[..., i] & finite.any(axis=-1)
        if not hole.any():
            continue
        for j in sorted((j for j in range(len(bands)) if j != i),
                        key=lambda j: abs(S2_WAVELENGTHS[bands[j]] - S2_WAVELENGTHS[b])):
            take = hole & finite[..., j]
            data[..., i] = np.where(take, data[..., j], data[..., i])
            hole &= ~take
            if not hole.any():
                break
    return data


# --- pooling ------------------------------------------------------------------------
def pool_tokens(tok, keep, pool_time: bool):
    """Token vectors → per-patch vectors: the mean of the kept tokens.

    ``tok`` is ``(B, h, w, T, G, D)`` and ``keep`` ``(B, h, w, T, G)`` (bool or 0/1);
    ``(B, h, w, T, D)`` with ``(B, h, w, T)`` means ``G = 1``. Returns ``(B, h, w, D)``
    pooled over ``G`` and ``T``, or ``(B, h, w, T, D)`` pooled over ``G`` only
    (``pool_time=False``); NaN where no token was kept.
    """
    torch = require_torch()
    if tok.dim() == 5:  # one token per patch and timestep
        tok, keep = tok[..., None, :], keep[..., None]
    keep = keep.to(tok.dtype)
    total = (tok * keep[..., None]).sum(dim=4)  # (B, h, w, T, D)
    count = keep.sum(dim=4)  # (B, h, w, T)
    if pool_time:
        total, count = total.sum(dim=3), count.sum(dim=3)
    emb = total / count.clamp(min=1)[..., None]
    return torch.where(count[..., None] > 0, emb, torch.full_like(emb, float("nan")))


def freeze(module):
    """``module`` in eval mode with gradients off (the encoders are only ever run)."""
    module.eval()
    for prm in module.parameters():
        prm.requires_grad_(False)
    return module


# --- the adapter ----------------------------------------------------------------------
class TorchEncoder:
    """:class:`eoembed.encode.Encoder` for a torch module; subclasses supply what differs.

    Class attributes a family may set: ``mean``/``std`` (per band, model units) for the
    default :meth:`normalize`; ``fill_from_nearest_band`` to fill a band the cube lacks
    from the nearest model band in wavelength (only where the model reads close
    neighbours, e.g. PhilEO's B08/B8A; otherwise it becomes the band mean);
    ``stamp_weights_file`` to name the state-dict file in the provenance.
    """

    mean: np.ndarray | None = None
    std: np.ndarray | None = None
    fill_from_nearest_band: bool = False
    stamp_weights_file: bool = False

    def __init__(self, spec: ModelSpec, module, device: str, source: WeightsSource | None, extra: dict | None = None):
        self.spec = spec
        self.module = module
        self.device = device
        self.source = source
        self.extra = dict(extra or {})

    # -- what a family supplies ----------------------------------------------------------
    @classmethod
    def build_module(cls, spec: ModelSpec, source: WeightsSource) -> tuple[object, dict]:
        """The torch module for ``spec`` with the checkpoint loaded (on the CPU), and extra
        provenance attrs."""
        raise NotImplementedError

    def tokens(self, batch):
        """One :class:`~eoembed.encode.TileBatch` → ``(tok, keep)`` tensors on the device.

        ``tok`` ``(B, h, w, T, G, D)`` (or ``(B, h, w, T, D)``), ``keep`` ``(B, h, w, T, G)``
        (or ``(B, h, w, T)``): the tokens that are real. Runs inside :meth:`encode`'s
        inference context.
        """
        raise NotImplementedError

    # -- shared ------------------------------------------------------------------------
    @classmethod
    def load(cls, spec: ModelSpec, weights=None, device: str | None = None) -> "TorchEncoder":
        """Resolve the device and weights, build the frozen module there, wrap it.

        Caching across calls is :func:`eoembed.models.load_model`'s job (one cache per process).
        """
        device = resolve_device(device)
        source = resolve_weights(spec, weights)
        module, extra = cls.build_module(spec, source)
        return cls(spec, freeze(module).to(device), device, source, extra)

    def tensor(self, array, dtype=None):
        """numpy → tensor on this encoder's device (:func:`~eoembed.models._torchcommon.to_device`)."""
        return to_device(array, self.device, dtype)

    @staticmethod
    def neutral(batch) -> bool:
        """True when the batch asks for every token at in-window position (0, 0)."""
        return getattr(batch, "position", "raw") == "neutral"

    def normalize(self, modality: str, data: np.ndarray) -> np.ndarray:
        """``(x - mean) / std`` per band; what is still missing becomes 0 (the band mean;
        pixels without any data are masked anyway)."""
        data = np.asarray(data, dtype="float32")
        if self.fill_from_nearest_band:
            data = fill_nearest_band(data, self.spec.modalities[modality])
        out = (data - np.asarray(self.mean, dtype="float32")) / np.asarray(self.std, dtype="float32")
        return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0).astype("float32")

    def group_key(self, visible: dict[str, np.ndarray]) -> object:
        """Visible tokens in the tile: tiles with equal counts batch without padding, so a
        tile's result never depends on its batch mates."""
        return int(sum(v.sum() * self.spec.token_groups.get(m, 1) for m, v in visible.items()))

    def output_dim(self, plan_bands, ntime, pool_time) -> int:
        return int(self.spec.embedding_dim)

    def encode(self, batch, *, pool_time: bool) -> np.ndarray:
        """``(B, h, w, D)`` (``(B, h, w, T, D)`` with ``pool_time=False``) float32, NaN where
        nothing was visible."""
        self.output_dim(None, batch.timestamps.shape[1], pool_time)  # refuses what the family cannot do
        with inference(self.device, self.spec.family):
            tok, keep = self.tokens(batch)
        return pool_tokens(tok.float(), keep, pool_time).cpu().numpy().astype("float32")

    def compile_targets(self) -> list:
        """The modules ``compile=True`` compiles: the ones :meth:`tokens` calls."""
        return [self.module]

    def provenance(self) -> dict:
        attrs = provenance_attrs(self.spec, self.source, self.device)
        if self.stamp_weights_file and self.source is not None:
            attrs["eoembed:weights_file"] = os.path.basename(str(self.source.weights))
        return {**attrs, **self.extra}
