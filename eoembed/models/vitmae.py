"""Plain remote-sensing ViT-MAE encoders (RGB).

The family of "A Billion-scale Foundation Model for Remote Sensing Images" (Cha et
al., 2023): plain ViTs (ViT-B/16 86 M … ViT-G 2.4 B) pretrained with MAE on
MillionAID RGB imagery. Any plain timm-layout ViT with 3 input channels loads:

* the MAE-style checkpoint ``{"model": state_dict}`` (pretraining files also hold
  the decoder, ``decoder_*`` and ``mask_token``: ignored);
* a bare state dict as TorchGeo / timm save it (``head.*`` ignored).

Per-patch embeddings are the encoder's patch tokens after the final norm (CLS token
dropped); the absolute position embedding is resampled (bicubic, antialiased, as
timm does) to the tile's patch grid. Each timestep is one RGB image; with
``pool_time=True`` its patch vectors are averaged over the timesteps that hold data.

Input: Sentinel-2 B04/B03/B02 reflectance mapped to true-colour the usual way for
RGB models on Sentinel-2 (reflectance / 0.3 clipped to 0–1, i.e. the 0–3000 DN
stretch of SatlasPretrain and the TCI product), then ImageNet mean/std as MAE
pretraining used. The paper's weights have no public download that could be
confirmed offline: pass ``weights=`` (file or folder).
"""

from __future__ import annotations

import numpy as np

from eoembed.exceptions import CorruptWeightsError
from eoembed.models._encoder import TorchEncoder, load_into, read_checkpoint
from eoembed.models.registry import ModelSpec, PretrainedWeights, WeightFile, register_model

RGB_BANDS = ("B04", "B03", "B02")
#: DN that maps to full brightness (reflectance 0.3), as in the Sentinel-2 TCI stretch.
RGB_DN_MAX = 3000.0
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406])
IMAGENET_STD = np.array([0.229, 0.224, 0.225])
#: No public weights are registered: the licence is the one of the checkpoint you supply.
LICENSE = "unconfirmed (your checkpoint's)"

# size → (dim, depth, heads, params)
_SIZES = {
    "base": (768, 12, 12, 86_000_000),
    "large": (1024, 24, 16, 304_000_000),
}
#: Checkpoint keys that are not part of the encoder (MAE decoder, classifier heads).
_IGNORED_PREFIXES = ("decoder", "mask_token", "head.", "fc_norm.")


def _make_spec(size: str) -> ModelSpec:
    dim, depth, heads, params = _SIZES[size]
    return ModelSpec(
        window_positions=True,  # absolute 2-D positions inside the window
        name=f"vitmae-rs-{size}",
        family="vitmae",
        version="rs-mae",
        size=size,
        embedding_dim=dim,
        modalities={"sentinel2_l2a": RGB_BANDS},
        required_modalities=("sentinel2_l2a",),
        token_groups={"sentinel2_l2a": 1},
        max_timesteps=12,
        attends_across_time=False,  # each timestep is one image
        patch_sizes=(16,),
        default_patch_size=16,
        square_tiles=False,
        native_resolution=10.0,
        params=params,
        depth=depth,
        num_heads=heads,
        mlp_ratio=4.0,
        weights=PretrainedWeights(
            # the MAE repository's name for {"model": state_dict} files; any name works with weights=FILE
            files=(WeightFile(f"mae_pretrain_vit_{size}.pth"),),
            license=LICENSE,
            notes="no public weights registered: bring your own (weights=PATH)",
        ),
        description=f"plain RS ViT-{size[0].upper()}/16 MAE, RGB ({dim}-d; bring your own weights)",
        aliases=(f"vit-mae-{size}",),
    )


def load_vitmae(spec: ModelSpec, weights=None, device: str | None = None) -> "ViTMAEEncoder":
    """Build the encoder for ``spec`` (caching across calls is :func:`eoembed.models.load_model`'s job)."""
    return ViTMAEEncoder.load(spec, weights, device)


class ViTMAEEncoder(TorchEncoder):
    """:class:`eoembed.encode.Encoder` around a plain RGB ViT."""

    mean = IMAGENET_MEAN
    std = IMAGENET_STD
    stamp_weights_file = True

    @classmethod
    def build_module(cls, spec: ModelSpec, source):
        from eoembed.models._vit import PlainViT, grid_side

        state = read_checkpoint(source.weights)
        state = {k: v for k, v in state.items() if not k.startswith(_IGNORED_PREFIXES)}
        dim, depth, heads = int(spec.embedding_dim), int(spec.depth), int(spec.num_heads)
        if "pos_embed" not in state:
            raise CorruptWeightsError(
                f"{source.weights} has no 'pos_embed': it is not a plain ViT checkpoint "
                f"(keys: {', '.join(sorted(state)[:6])}…). {spec.name} expects a timm/MAE ViT-{spec.size} state dict."
            )
        grid_side(state["pos_embed"].shape[1] - 1, f"{source.weights} pos_embed")
        # MAE fine-tuned checkpoints with global pooling keep fc_norm instead of norm (timm: norm = Identity)
        module = PlainViT(dim, depth, heads, state["pos_embed"].shape[1], final_norm="norm.weight" in state)
        load_into(module, state, source.weights, spec)
        return module, {"eoembed:tokens": "patch tokens after final norm, CLS dropped"}

    def normalize(self, modality: str, data: np.ndarray) -> np.ndarray:
        """DN → true-colour 0–1 (÷ 3000, clipped) → ImageNet mean/std; missing → 0."""
        rgb = np.clip(np.asarray(data, dtype="float32") / np.float32(RGB_DN_MAX), 0.0, 1.0)
        return super().normalize(modality, rgb)

    def compile_targets(self) -> list:
        """:meth:`patch_tokens` calls the patch embedding and each block, not ``forward``."""
        return [self.module.patch_embed, *self.module.blocks]

    def group_key(self, visible: dict) -> tuple:
        """Visible patches per timestep: equal keys → equal token counts per image."""
        v = visible["sentinel2_l2a"]
        return tuple(int(n) for n in v.reshape(-1, v.shape[-1]).sum(axis=0))

    def patch_tokens(self, x, keep=None, neutral: bool = False):
        """``(B, 3, H, W)`` normalized images → ``(B, h*w, D)`` patch tokens.

        ``neutral`` gives every patch the position embedding of the window's first patch.

        ``keep`` (``(B, h*w)`` bool, equal counts per row) drops the other tokens
        before the transformer; their outputs are zero.
        """
        import torch
        import torch.nn.functional as F

        from eoembed.models._vit import gather_visible, scatter_back

        m = self.module
        t = m.patch_embed.proj(x)  # (B, D, h, w)
        b, d, h, w = t.shape
        t = t.flatten(2).transpose(1, 2)
        pos = m.pos_embed[:, 1:]
        side = int(round(pos.shape[1] ** 0.5))
        if (h, w) != (side, side):
            pos = pos.reshape(1, side, side, d).permute(0, 3, 1, 2)
            pos = F.interpolate(pos, size=(h, w), mode="bicubic", antialias=True, align_corners=False)
            pos = pos.permute(0, 2, 3, 1).reshape(1, h * w, d)
        if neutral:
            pos = pos[:, :1].expand(1, h * w, d)
        t = t + pos
        order = None
        if keep is not None and not bool(keep.all()):
            t, order = gather_visible(t, keep)
        cls = (m.cls_token + m.pos_embed[:, :1]).expand(b, -1, -1)
        t = torch.cat([cls, t], dim=1)
        for blk in m.blocks:
            t = blk(t)
        t = m.norm(t)[:, 1:]
        return t if order is None else scatter_back(t, order, h * w)

    def tokens(self, batch):
        """Each timestep's image on its own: ``(B, h, w, T, D)`` patch tokens."""
        import torch

        x = self.tensor(batch.data["sentinel2_l2a"])  # (B, H, W, T, 3)
        vis = self.tensor(batch.visible["sentinel2_l2a"])  # (B, h, w, T)
        b, h, w, nt = vis.shape
        out = torch.zeros(b, h, w, nt, int(self.spec.embedding_dim), device=self.device)
        for t in range(nt):
            keep = vis[..., t].reshape(b, h * w)
            if not bool(keep.any()):
                continue
            img = x[..., t, :].permute(0, 3, 1, 2).contiguous()
            out[..., t, :] = self.patch_tokens(img, keep, neutral=self.neutral(batch)).float().reshape(b, h, w, -1)
        return out, vis


for _size in _SIZES:
    register_model(_make_spec(_size), loader=load_vitmae)
