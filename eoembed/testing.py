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


# ---- a real JupyterLab for browser tests and screenshots --------------------------------------------------------
def write_notebook(path, cells, kernel: str = "eoembed-venv") -> Path:
    """Write a notebook of code ``cells`` (sources) whose kernelspec is ``kernel``."""
    nb = {"cells": [{"cell_type": "code", "id": f"c{i}", "metadata": {}, "execution_count": None, "outputs": [],
                     "source": src} for i, src in enumerate(cells)],
          "nbformat": 4, "nbformat_minor": 5,
          "metadata": {"kernelspec": {"name": kernel, "display_name": "eoembed venv", "language": "python"},
                       "language_info": {"name": "python"}}}
    path = Path(path)
    path.write_text(json.dumps(nb))
    return path


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def jupyterlab(root, *, env: dict | None = None, kernel: str = "eoembed-venv", timeout: float = 120.0):
    """Start a real JupyterLab on 127.0.0.1 (free port, no token) serving ``root/"work"``; a context manager.

    A kernelspec ``kernel`` that runs this interpreter is written under ``root/"jupyter"``
    (first on ``JUPYTER_PATH``, before any path already set); JupyterLab's config, settings and workspaces live under
    ``root`` too, so nothing of the user's is read or written. ``env`` adds environment
    variables for the server and its kernels. Yields the server URL; stops the server at
    exit. Raises RuntimeError with the end of its log when it does not start.
    """
    import contextlib
    import os
    import subprocess
    import sys
    import time
    import urllib.request

    @contextlib.contextmanager
    def _run():
        base = Path(root)
        work = base / "work"
        work.mkdir(parents=True, exist_ok=True)
        spec = base / "jupyter" / "kernels" / kernel
        spec.mkdir(parents=True, exist_ok=True)
        (spec / "kernel.json").write_text(json.dumps({
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "eoembed venv", "language": "python"}))
        port = free_port()
        jpath = os.pathsep.join(p for p in (str(base / "jupyter"), os.environ.get("JUPYTER_PATH", "")) if p)
        full_env = {**os.environ, "JUPYTER_PATH": jpath, "JUPYTER_CONFIG_DIR": str(base / "config"),
                    "JUPYTERLAB_SETTINGS_DIR": str(base / "settings"),
                    "JUPYTERLAB_WORKSPACES_DIR": str(base / "workspaces"), **(env or {})}
        log_path = base / "lab.log"
        with open(log_path, "w") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root", f"--port={port}",
                 "--ServerApp.ip=127.0.0.1", "--ServerApp.token=", "--ServerApp.password=",
                 "--ServerApp.disable_check_xsrf=True", f"--ServerApp.root_dir={work}", "--LabApp.news_url=None"],
                cwd=work, env=full_env, stdout=log, stderr=subprocess.STDOUT)
            url = f"http://127.0.0.1:{port}"
            try:
                deadline = time.time() + timeout
                while True:
                    try:
                        urllib.request.urlopen(f"{url}/api/status", timeout=2)
                        break
                    except OSError:
                        if proc.poll() is not None or time.time() > deadline:
                            raise RuntimeError("JupyterLab did not start:\n" + log_path.read_text()[-3000:]) from None
                        time.sleep(0.5)
                yield url
            finally:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()

    return _run()


def dismiss_popups(page) -> None:
    """On a JupyterLab page (Playwright): accept the kernel dialog and dismiss the "Jupyter news" toast."""
    try:
        page.locator(".jp-Dialog").locator("button", has_text="Select").first.click(timeout=5000)
    except Exception:  # no dialog: the kernel started on its own
        pass
    try:
        page.get_by_role("button", name="No", exact=True).first.click(timeout=3000)
    except Exception:  # no toast shown: nothing to dismiss
        pass
