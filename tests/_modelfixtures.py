"""Cheap test models for the model registry tests (test-only).

Presto is the cheapest registered encoder (0.4 M parameters, per pixel). Its
``num_heads`` changes the attention split without changing any weight's shape, so one
test-built checkpoint loads into the registered spec and into a ``dataclasses.replace``
of it that computes something else: the pair that shows whether a spec travels whole.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from eoembed.models import get_model_spec

REGISTERED = get_model_spec("presto")
#: Same name and weight shapes as the registered spec, another model.
CUSTOM = replace(REGISTERED, num_heads=4)
#: A name no registry knows (a worker process included).
UNREGISTERED = replace(REGISTERED, name="presto-2heads", num_heads=2, aliases=())
#: 8-px tiles: a 16-px cube makes a graph of several blocks.
EMBED_KW = dict(device="cpu", tile_size=8)


def make_presto_checkpoint(path, seed: int = 0) -> Path:
    """Random weights in Presto's published layout (``encoder.*`` keys of ``default_model.pt``)."""
    import torch

    from eoembed.models._channel_groups import IN_CHANNELS
    from eoembed.models._presto_net import PrestoEncoder

    torch.manual_seed(seed)
    s = REGISTERED  # built as PrestoEncoderAdapter.build_module builds it
    net = PrestoEncoder(IN_CHANNELS, s.embedding_dim, s.depth, s.num_heads, s.mlp_ratio, s.max_timesteps)
    torch.save({f"encoder.{k}": v for k, v in net.state_dict().items()}, path)
    return Path(path)
