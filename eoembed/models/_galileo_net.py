"""The Galileo encoder as torch modules (imported only when a Galileo model is loaded).

Written from the paper (Tseng et al., "Galileo: Learning Global & Local Features of
Many Remote Sensing Modalities", ICML 2025) and the published checkpoint's state-dict
keys and shapes. Only the space-time part is built (Sentinel-1, Sentinel-2 groups,
NDVI): the space-only, time-only and static groups are always masked in eoembed, so
their projections are never used.

A token is one channel group of one patch at one timestep. Its vector is the group's
patch projection plus an encoding made of four equal quarters:
``[channel-group embedding (learned) | timestep position (1-D sin-cos) |
month (sin-cos table) | 2-D position in the window (sin-cos, scaled by the ground
size of a patch)]``. Masked tokens are dropped before the transformer; a pre-norm ViT
(:class:`~eoembed.models._layers.Block` with separate q/k/v projections, as the
checkpoint stores them) and a final LayerNorm follow.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from eoembed.models._layers import Block

#: Ground sampling distance (m) the 2-D positions are expressed in.
BASE_GSD_M = 10.0


class PatchProjection(nn.Module):
    """A linear patch projection stored at ``base`` × ``base`` pixels, usable at any size.

    Smaller patch sizes use the FlexiViT pseudo-inverse resize of the kernel (Beyer
    et al., 2023): the kernel ``w'`` for ``p × p`` patches minimises the difference
    between ``<x, w>`` and ``<resize(x), w'>``, i.e. ``w' = pinv(R) w`` where the rows of
    ``R`` are the (bicubic, antialiased) resizes of the ``base²`` unit images.
    """

    def __init__(self, in_chans: int, dim: int, base: int):
        super().__init__()
        self.base = base
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=base, stride=base)
        self._kernels: dict[int, torch.Tensor] = {}

    def _resize_matrix(self, p: int) -> torch.Tensor:
        eye = torch.eye(self.base * self.base, dtype=torch.float32).view(-1, 1, self.base, self.base)
        small = F.interpolate(eye, size=(p, p), mode="bicubic", antialias=True)
        return small.reshape(self.base * self.base, p * p)  # row i: resize of unit image i

    def kernel(self, p: int) -> torch.Tensor:
        w = self.proj.weight
        if p == self.base:
            return w
        if p not in self._kernels:
            pinv = torch.linalg.pinv(self._resize_matrix(p)).to(w.device, w.dtype)  # (p², base²)
            o, c = w.shape[:2]
            self._kernels[p] = (w.reshape(o * c, -1) @ pinv.T).reshape(o, c, p, p)
        return self._kernels[p]

    def forward(self, x: torch.Tensor, p: int) -> torch.Tensor:
        """``(N, C, H, W)`` → ``(N, D, H/p, W/p)``."""
        return F.conv2d(x, self.kernel(p), self.proj.bias, stride=p)


def sincos_1d(pos: torch.Tensor, dim: int) -> torch.Tensor:
    """``(M,)`` positions → ``(M, dim)``: ``[sin(pos·ω_k), cos(pos·ω_k)]``, ω_k = 10000^(−k/(2·dim))."""
    k = torch.arange(dim // 2, device=pos.device, dtype=torch.float32)
    omega = 1.0 / 10000 ** (k / (2.0 * dim))
    angles = pos.reshape(-1, 1).float() * omega[None]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def window_positions(size: int, dim: int, gsd_ratio: float, device) -> torch.Tensor:
    """``(size, size, dim)`` 2-D encoding: first half from the column, second from the row."""
    idx = torch.arange(size, device=device, dtype=torch.float32) * gsd_ratio
    col = sincos_1d(idx, dim // 2)  # (size, dim/2)
    row = sincos_1d(idx, dim // 2)
    return torch.cat([col[None, :, :].expand(size, -1, -1), row[:, None, :].expand(-1, size, -1)], dim=-1)


class GalileoEncoder(nn.Module):
    """The space-time encoder.

    Parameters
    ----------
    groups:
        Channel group name → number of input channels, in token order.
    dim, depth, heads, mlp_ratio:
        Transformer size.
    max_timesteps:
        Length of the timestep-position table.
    base_patch:
        Patch size the projections are stored at.
    """

    def __init__(self, groups: dict[str, int], dim: int, depth: int, heads: int, mlp_ratio: float,
                 max_timesteps: int, base_patch: int):
        super().__init__()
        q = dim // 4
        self.dim, self.quarter = dim, q
        self.group_names = list(groups)
        self.pos_embed = nn.Parameter(torch.zeros(max_timesteps, q), requires_grad=False)
        self.month_embed = nn.Embedding(12, q)
        self.s_t_channel_embed = nn.Parameter(torch.zeros(len(groups), q))
        self.space_time_embed = nn.ModuleDict({g: PatchProjection(c, dim, base_patch) for g, c in groups.items()})
        self.blocks = nn.ModuleList([Block(dim, heads, mlp_ratio, fused_qkv=False) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: dict[str, torch.Tensor], visible: torch.Tensor, months: torch.Tensor,
                patch_size: int, input_res: float, neutral: bool = False) -> torch.Tensor:
        """Encode one batch of square windows.

        Parameters
        ----------
        x:
            Group name → ``(B, H, W, T, C_g)`` normalized values (finite).
        visible:
            ``(B, h, w, T, G)`` bool, one flag per token.
        months:
            ``(B, T)`` month index 0–11.
        neutral:
            Encode every token at window position (0, 0) instead of its own, so outputs
            carry no in-window position.

        Returns
        -------
        torch.Tensor
            ``(B, h, w, T, G, D)`` token vectors after the final norm; tokens that
            were not visible hold zeros-in (their values carry no meaning).
        """
        b, h, w, t, g = visible.shape
        if h != w:
            raise ValueError(f"Galileo windows must be square, got {h}×{w} patches")
        p, q = patch_size, self.quarter
        toks = []
        for name in self.group_names:
            xi = x[name]  # (B, H, W, T, C)
            xi = xi.permute(0, 3, 4, 1, 2).reshape(b * t, xi.shape[-1], xi.shape[1], xi.shape[2])
            e = self.space_time_embed[name](xi, p)  # (B*T, D, h, w)
            toks.append(e.reshape(b, t, self.dim, h, w).permute(0, 3, 4, 1, 2))  # (B, h, w, T, D)
        tok = torch.stack(toks, dim=4)  # (B, h, w, T, G, D)

        dev = tok.device
        wpos = window_positions(h, q, input_res * p / BASE_GSD_M, dev)
        if neutral:
            wpos = wpos[:1, :1].expand(h, w, -1)
        enc = torch.cat([
            self.s_t_channel_embed[None, None, None, None].expand(b, h, w, t, g, q),
            self.pos_embed[:t][None, None, None, :, None].expand(b, h, w, t, g, q),
            self.month_embed(months)[:, None, None, :, None].expand(b, h, w, t, g, q),
            wpos[None, :, :, None, None].expand(b, h, w, t, g, q),
        ], dim=-1)
        tok = (tok + enc).reshape(b, -1, self.dim)
        vis = visible.reshape(b, -1)

        # drop masked tokens: visible ones first (stable), cut at the longest sample
        order = torch.argsort((~vis).to(torch.int8), dim=1, stable=True)
        n = int(vis.sum(dim=1).max())
        idx = order[:, :n]
        seq = tok.gather(1, idx[..., None].expand(-1, -1, self.dim))
        keep = vis.gather(1, idx)
        mask = None if bool(keep.all()) else keep
        for blk in self.blocks:
            seq = blk(seq, mask)
        seq = self.norm(seq)
        out = torch.zeros_like(tok)
        out.scatter_(1, idx[..., None].expand(-1, -1, self.dim), seq * keep[..., None])
        return out.reshape(b, h, w, t, g, self.dim)
