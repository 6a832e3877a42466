"""The Prithvi-EO encoder network (imports torch; loaded lazily by :mod:`.prithvi`).

Written from the Prithvi-EO papers (Jakubik et al. 2023; Szwarcman et al. 2024) and
the published state-dict layout: a ViT whose patch embedding is a 3-D convolution
over ``(1, p, p)`` tubelets, a fixed 3-D sine/cosine position embedding (``pos_embed``
buffer, CLS position first), pre-norm blocks with LayerNorm eps 1e-5 and, in the
``-TL`` models, sine/cosine encodings of (year, day of year) and of the location,
each multiplied by a learned scalar, added to every token.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from eoembed.models._layers import Block
from eoembed.models._vit import gather_visible, scatter_back, sincos_1d, sincos_1d_torch


def sincos_3d(dim: int, t: int, h: int, w: int) -> np.ndarray:
    """``(t*h*w, dim)``: 6/16 of the channels encode x, 6/16 y, 4/16 time (token order t, y, x)."""
    dw = dh = dim // 16 * 6
    dt = dim // 16 * 4
    ew = np.tile(sincos_1d(dw, np.arange(w)), (t * h, 1))
    eh = np.tile(np.repeat(sincos_1d(dh, np.arange(h)), w, axis=0), (t, 1))
    et = np.repeat(sincos_1d(dt, np.arange(t)), h * w, axis=0)
    return np.concatenate([ew, eh, et], axis=1)


class _ScaledSinCos(nn.Module):
    """Two sine/cosine encodings side by side, times a learned scalar (``scale``)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        shape = a.shape + (-1,)
        half = self.dim // 2
        ea = sincos_1d_torch(half, a.reshape(-1)).reshape(shape)
        eb = sincos_1d_torch(self.dim - half, b.reshape(-1)).reshape(shape)
        return self.scale * torch.cat([ea, eb], dim=-1)


class PrithviNet(nn.Module):
    """Encoder only; state-dict keys as in the published checkpoints after ``encoder.``."""

    def __init__(self, *, dim: int, depth: int, heads: int, patch: int, bands: int, frames: int,
                 grid: int, coords: bool):
        super().__init__()
        self.dim, self.frames, self.grid, self.patch = dim, frames, grid, patch
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv3d(bands, dim, (1, patch, patch), stride=(1, patch, patch))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        pe = np.concatenate([np.zeros((1, dim)), sincos_3d(dim, frames, grid, grid)])
        self.register_buffer("pos_embed", torch.from_numpy(pe).float()[None])
        self.blocks = nn.ModuleList([Block(dim, heads, 4.0, 1e-5) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-5)
        self.coords = coords
        if coords:
            self.temporal_embed_enc = _ScaledSinCos(dim)
            self.location_embed_enc = _ScaledSinCos(dim)

    def position(self, t: int, h: int, w: int) -> torch.Tensor:
        """``(1, 1 + t*h*w, D)``: the checkpoint's embedding, recomputed for another number
        of frames and resized (bicubic, corners aligned) for another patch grid, as the
        reference implementation does."""
        pe = self.pos_embed
        if (t, h, w) == (self.frames, self.grid, self.grid):
            return pe
        if t != self.frames:
            new = np.concatenate([np.zeros((1, self.dim)), sincos_3d(self.dim, t, self.grid, self.grid)])
            pe = torch.from_numpy(new).float()[None].to(pe.device)
        cls, grid = pe[:, :1], pe[:, 1:]
        if (h, w) != (self.grid, self.grid):
            grid = grid.reshape(t, self.grid, self.grid, self.dim).permute(0, 3, 1, 2)
            grid = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=True)
            grid = grid.permute(0, 2, 3, 1).reshape(1, t * h * w, self.dim)
        return torch.cat([cls, grid], dim=1)

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None, temporal: torch.Tensor | None = None,
                location: torch.Tensor | None = None, neutral: bool = False) -> torch.Tensor:
        """``(B, C, T, H, W)`` normalized → ``(B, T*h*w, D)`` tokens (order t, y, x).

        ``keep`` (``(B, T*h*w)`` bool, equal counts per row) drops the other tokens
        before the transformer (their output is zero). ``temporal`` is ``(B, T, 2)``
        (year, day of year), ``location`` ``(B, 2)``; both are used only by ``-TL`` models.
        ``neutral`` encodes every token at spatial position (0, 0) of its frame.
        """
        b, _, t, hh, ww = x.shape
        h, w = hh // self.patch, ww // self.patch
        tok = self.patch_embed.proj(x).flatten(2).transpose(1, 2)  # (B, T*h*w, D)
        pos = self.position(t, h, w)
        grid = pos[:, 1:]
        if neutral:  # keep each frame's temporal part, drop the in-window (y, x) part
            grid = grid.reshape(1, t, h * w, -1)[:, :, :1].expand(1, t, h * w, -1).reshape(1, t * h * w, -1)
        tok = tok + grid
        if self.coords and temporal is not None:
            tok = tok + torch.repeat_interleave(self.temporal_embed_enc(temporal[..., 0], temporal[..., 1]), h * w, dim=1)
        if self.coords and location is not None:
            tok = tok + self.location_embed_enc(location[:, :1], location[:, 1:])
        order = None
        if keep is not None and not bool(keep.all()):
            tok, order = gather_visible(tok, keep)
        cls = (self.cls_token + pos[:, :1]).expand(b, -1, -1)
        tok = torch.cat([cls, tok], dim=1)
        for blk in self.blocks:
            tok = blk(tok)
        tok = self.norm(tok)[:, 1:]
        return tok if order is None else scatter_back(tok, order, t * h * w)
