"""The Presto encoder as torch modules (imported only when Presto is loaded).

Written from the paper (Tseng et al., "Lightweight, Pre-trained Transformers for
Remote Sensing Timeseries", 2023) and the published checkpoint's ``encoder.*``
state-dict keys and shapes. One sample is one pixel's time series. A token is one
channel group at one timestep: the group's linear projection plus
``[month (sin-cos table) | channel-group embedding (learned) | timestep position
(sin-cos)]``. A location token (lat/lon on the unit sphere, projected) comes first.
Masked tokens are dropped, a pre-norm transformer (fused qkv, GELU MLP) runs, and
the sample's vector is the LayerNorm of the mean over all its tokens.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from eoembed.models._layers import Block

#: Channel-group embedding rows used by the checkpoint (its 10 rows, in this order).
CHANNEL_ROWS = {"S1": 0, "S2_RGB": 1, "S2_Red_Edge": 2, "S2_NIR_10m": 3, "S2_NIR_20m": 4, "S2_SWIR": 5,
                "ERA5": 6, "SRTM": 7, "NDVI": 8, "dynamic_world": 9}


class PrestoEncoder(nn.Module):
    """Presto's encoder restricted to the groups eoembed feeds (others are always masked).

    Parameters
    ----------
    groups:
        Group name → number of input channels.
    """

    def __init__(self, groups: dict[str, int], dim: int = 128, depth: int = 2, heads: int = 8,
                 mlp_ratio: float = 4.0, max_timesteps: int = 24):
        super().__init__()
        self.dim = dim
        self.group_names = list(groups)
        self.eo_patch_embed = nn.ModuleDict({g: nn.Linear(c, dim) for g, c in groups.items()})
        self.latlon_embed = nn.Linear(3, dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, max_timesteps, dim // 2), requires_grad=False)
        self.month_embed = nn.Embedding(12, dim // 4)
        self.channel_embed = nn.Embedding(len(CHANNEL_ROWS), dim // 4)
        self.blocks = nn.ModuleList([Block(dim, heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: dict[str, torch.Tensor], visible: torch.Tensor, months: torch.Tensor,
                latlon: torch.Tensor) -> torch.Tensor:
        """Embed ``N`` pixel series that share one mask pattern.

        Parameters
        ----------
        x:
            Group → ``(N, T, C_g)`` normalized values.
        visible:
            ``(T, G)`` bool, the same for every series of the call.
        months:
            ``(N, T)`` month index 0–11.
        latlon:
            ``(N, 2)`` degrees.

        Returns
        -------
        torch.Tensor
            ``(N, D)``.
        """
        n, t = months.shape
        dev = months.device
        month = self.month_embed(months)  # (N, T, D/4)
        pos = self.pos_embed[0, :t][None].expand(n, t, -1)  # (N, T, D/2)
        tokens = []
        for gi, g in enumerate(self.group_names):
            keep = visible[:, gi]
            if not bool(keep.any()):
                continue
            chan = self.channel_embed(torch.tensor(CHANNEL_ROWS[g], device=dev))[None, None].expand(n, t, -1)
            tok = self.eo_patch_embed[g](x[g]) + torch.cat([month, chan, pos], dim=-1)
            tokens.append(tok[:, keep])
        lat, lon = torch.deg2rad(latlon[:, 0]), torch.deg2rad(latlon[:, 1])
        xyz = torch.stack([torch.cos(lat) * torch.cos(lon), torch.cos(lat) * torch.sin(lon), torch.sin(lat)], -1)
        seq = torch.cat([self.latlon_embed(xyz)[:, None], *tokens], dim=1)
        for blk in self.blocks:
            seq = blk(seq)
        return self.norm(seq.mean(dim=1))
