"""The transformer layers every ViT-style net in eoembed is built from (imports torch).

One pre-norm block (``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``) with a GELU
MLP, in the published state-dict layout shared by timm, MAE, Prithvi-EO, Galileo and
Presto: ``norm1``, ``attn.qkv`` (or ``attn.q``/``attn.k``/``attn.v`` where a
checkpoint stores the three projections apart, as Galileo's does), ``attn.proj``,
``norm2``, ``mlp.fc1``, ``mlp.fc2``. What differs between the families is a
constructor argument (LayerNorm epsilon, fused or split q/k/v), never a copy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    """Multi-head self-attention.

    Parameters
    ----------
    dim, heads:
        Width and number of heads (``dim`` divisible by ``heads``).
    fused_qkv:
        One ``qkv`` projection (timm, Presto) or three, ``q``/``k``/``v`` (Galileo).
    qkv_bias:
        Bias on the q/k/v projections.
    """

    def __init__(self, dim: int, heads: int, *, fused_qkv: bool = True, qkv_bias: bool = True):
        super().__init__()
        self.heads = heads
        self.fused_qkv = fused_qkv
        if fused_qkv:
            self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        else:
            self.q = nn.Linear(dim, dim, bias=qkv_bias)
            self.k = nn.Linear(dim, dim, bias=qkv_bias)
            self.v = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, N, D)`` → ``(B, N, D)``; ``keep`` (``(B, N)`` bool) hides the other keys."""
        b, n, d = x.shape
        if self.fused_qkv:
            q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        else:
            q, k, v = (t.reshape(b, n, self.heads, d // self.heads).transpose(1, 2)
                       for t in (self.q(x), self.k(x), self.v(x)))
        mask = None if keep is None else keep[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    """``fc2(gelu(fc1(x)))``."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``.

    Parameters
    ----------
    dim, heads, mlp_ratio:
        Width, attention heads, MLP hidden width / ``dim``.
    eps:
        LayerNorm epsilon (1e-5 is torch's default; timm ViTs use 1e-6).
    fused_qkv:
        See :class:`Attention`.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, eps: float = 1e-5, *, fused_qkv: bool = True):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, heads, fused_qkv=fused_qkv)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), keep)
        return x + self.mlp(self.norm2(x))
