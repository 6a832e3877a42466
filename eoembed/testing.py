"""Helpers for tests, demos and benchmarks: checkpoints in the published layout and
synthetic georeferenced cubes.

``make_checkpoint`` builds the real OlmoEarth architecture with random weights
(from ``olmoearth-pretrain-minimal``) and saves it exactly as the Hugging Face repos
publish it: ``config.json`` (the training config's ``model`` section in ``_CLASS_``
form plus ``only_decode_modalities``) and ``weights.pth`` (full fp32 state dict).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import rioxarray  # noqa: F401  (registers .rio)
import xarray as xr
from affine import Affine
from rioxarray.rioxarray import affine_to_coords

from eoembed.sensors import S2_L2A_BANDS

_ENCODER_MODALITIES = ("sentinel2_l2a", "sentinel1", "landsat")


def make_checkpoint(path, version: str = "v1.1", size: str = "nano", *, seed: int = 0) -> Path:
    """Write a random-weight OlmoEarth checkpoint in the published layout.

    Returns the folder (holding ``config.json`` and ``weights.pth``).
    """
    import torch
    from olmoearth_pretrain_minimal import OlmoEarthPretrain_v1
    from olmoearth_pretrain_minimal.olmoearth_pretrain_v1.nn import latent_mim

    captured = {}
    original = latent_mim.LatentMIMConfig.build

    def _capture(self):
        captured["config"] = self
        return original(self)

    latent_mim.LatentMIMConfig.build = _capture
    try:
        torch.manual_seed(seed)
        wrapper = OlmoEarthPretrain_v1(size, version)
    finally:
        latent_mim.LatentMIMConfig.build = original
    cfg = captured["config"].as_config_dict()
    supported = cfg["encoder_config"]["supported_modality_names"]
    full = {
        "model": cfg,
        "train_module": {
            "masking_config": {
                "strategy_config": {
                    "only_decode_modalities": [m for m in supported if m not in _ENCODER_MODALITIES]
                }
            }
        },
    }
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(full, indent=1))
    torch.save(wrapper.model.state_dict(), out / "weights.pth")
    return out


def constant_scene(cube: xr.DataArray) -> xr.DataArray:
    """``cube`` with every pixel of each timestep and band set to that band's mean over the cube.

    Every patch then holds the same pixels: an encoder without in-window positions gives
    every patch whose windows are alike the same vector (``position="neutral"`` tests).
    """
    means = cube.mean(("y", "x")).values[..., None, None]
    return cube.copy(data=np.broadcast_to(means, cube.shape).copy())


def window_aligned_origin(*window_px: int, res: float = 10.0,
                          near: tuple[float, float] = (600000.0, 5600000.0)) -> tuple[float, float]:
    """An ``(x, y)`` top-left origin near ``near`` on the CRS-anchored window grid of every given stride.

    Windows sit at multiples of their stride from the CRS origin (:mod:`eoembed.grid`), so a
    cube built at this origin (``synthetic_cube(origin=...)``) with a side of one window is
    encoded as exactly that window — what parity tests against a direct encoder call need.
    """
    step = math.lcm(*(int(w) for w in window_px)) * res
    return math.floor(near[0] / step) * step, math.floor(near[1] / step) * step


def synthetic_cube(
    *,
    height: int = 32,
    width: int = 32,
    times: int = 3,
    bands=S2_L2A_BANDS,
    start: str = "2021-03-01",
    freq: str = "MS",
    crs: str = "EPSG:32631",
    origin: tuple[float, float] = (600000.0, 5600000.0),
    res: float = 10.0,
    seed: int = 0,
    dtype: str = "float32",
    classes: int = 3,
) -> xr.DataArray:
    """A ``(time, band, y, x)`` cube of plausible L2A DN values with spatial structure.

    The scene is split into ``classes`` vertical stripes of distinct spectra plus noise,
    so embeddings and classifiers have something real to find.
    """
    rng = np.random.default_rng(seed)
    base = rng.uniform(300, 4000, size=(classes, len(bands)))
    stripe = (np.arange(width) * classes // width)[None, :].repeat(height, 0)
    data = base[stripe].transpose(2, 0, 1)[None].repeat(times, 0)
    season = 1 + 0.2 * np.sin(np.arange(times) / max(times, 1) * np.pi)[:, None, None, None]
    data = data * season + rng.normal(0, 80, size=(times, len(bands), height, width))
    data = np.clip(data, 1, 12000).astype(dtype)
    transform = Affine(res, 0, origin[0], 0, -res, origin[1])
    centres = affine_to_coords(transform, width, height)
    x, y = centres["x"], centres["y"]
    cube = xr.DataArray(
        data,
        dims=("time", "band", "y", "x"),
        coords={"time": pd.date_range(start, periods=times, freq=freq), "band": list(bands), "y": y, "x": x},
        name="reflectance",
    )
    return cube.rio.write_crs(crs).rio.write_transform(transform)
