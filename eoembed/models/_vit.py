"""Plain Vision Transformer pieces shared by the Prithvi and ViT-MAE families.

Written from the ViT/MAE papers and the published state-dict layout (timm names;
the blocks are :class:`eoembed.models._layers.Block`), so checkpoints of timm-style
ViTs load key for key.

Missing data: both families were pretrained as masked autoencoders, whose encoder
only ever sees the *visible* tokens. eoembed does the same: tokens of patch-timesteps
without data are dropped before the transformer (after their position embedding is
added), never filled with invented pixels. Tiles are batched by visible-token count,
so no padding is needed and a tile's result never depends on its batch mates.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from eoembed.models._layers import Block


class PlainViT(nn.Module):
    """A ViT-x/16 RGB encoder in timm's layout: ``patch_embed.proj``, ``cls_token``,
    ``pos_embed`` (CLS position first), ``blocks``, ``norm`` (LayerNorm eps 1e-6)."""

    def __init__(self, dim: int, depth: int, heads: int, n_pos: int, *, final_norm: bool = True):
        super().__init__()
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, dim, 16, stride=16)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, n_pos, dim))
        self.blocks = nn.ModuleList([Block(dim, heads, 4.0, 1e-6) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6) if final_norm else nn.Identity()


def sincos_1d(dim: int, pos: np.ndarray) -> np.ndarray:
    """``(M, dim)`` sine/cosine encoding of positions (float64, as MAE computes it)."""
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    out = np.outer(np.asarray(pos, dtype=np.float64).reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def sincos_1d_torch(dim: int, pos: torch.Tensor) -> torch.Tensor:
    """As :func:`sincos_1d` in the dtype of ``pos`` (Prithvi's time/location encoders)."""
    omega = torch.arange(dim // 2, dtype=pos.dtype, device=pos.device) / (dim / 2.0)
    omega = 1.0 / 10000**omega
    out = pos.reshape(-1)[:, None] * omega[None, :]
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)


def gather_visible(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """``(B, N, D)`` tokens, ``(B, N)`` bool with the same count per row → ``(B, K, D)``.

    Tokens keep their original order (a stable sort puts kept ones first).
    """
    counts = keep.sum(dim=1)
    k = int(counts[0])
    if not bool((counts == k).all()):
        raise ValueError(
            f"a batch mixes tiles with {sorted(set(counts.tolist()))} visible tokens; batch tiles by "
            "Encoder.group_key so that every tile has the same count"
        )
    order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)[:, :k]
    return torch.gather(x, 1, order[..., None].expand(-1, -1, x.shape[-1])), order


def scatter_back(tok: torch.Tensor, order: torch.Tensor, n: int) -> torch.Tensor:
    """Inverse of :func:`gather_visible`: ``(B, K, D)`` → ``(B, N, D)`` with zeros elsewhere."""
    out = tok.new_zeros(tok.shape[0], n, tok.shape[-1])
    return out.scatter(1, order[..., None].expand(-1, -1, tok.shape[-1]), tok)


def grid_side(n_tokens: int, what: str) -> int:
    side = int(round(math.sqrt(n_tokens)))
    if side * side != n_tokens:
        from eoembed.exceptions import CorruptWeightsError

        raise CorruptWeightsError(f"{what} has {n_tokens} patch positions, not a square grid")
    return side
