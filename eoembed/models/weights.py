"""Finding and reading checkpoints safely.

Order of search for a model's ``config.json`` + ``weights.pth``:

1. ``weights=PATH`` given by the user: a directory holding both files, or a
   ``.pth`` file (with ``config.json`` beside it, or none: the architecture is then
   built from the registry spec);
2. the local cache ``$EOEMBED_WEIGHTS_DIR/<repo name>/`` (default
   ``~/.cache/eoembed/weights``), where you can put downloaded files by hand;
3. a Hugging Face download of the pinned revision (cached by ``huggingface_hub``),
   unless ``EOEMBED_OFFLINE=1`` or ``HF_HUB_OFFLINE=1``.

Checkpoints are read with ``torch.load(..., weights_only=True)`` only: a file that
holds pickled Python objects is refused.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from eoembed.exceptions import CorruptWeightsError, UnsafeWeightsError, WeightsNotFoundError
from eoembed.models.registry import ModelSpec

CONFIG_FILENAME = "config.json"
WEIGHTS_FILENAME = "weights.pth"


def weights_cache_dir() -> Path:
    """``$EOEMBED_WEIGHTS_DIR`` or ``~/.cache/eoembed/weights``."""
    env = os.environ.get("EOEMBED_WEIGHTS_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "eoembed" / "weights"


def _offline() -> bool:
    return any(os.environ.get(k, "").lower() in ("1", "true", "yes") for k in ("EOEMBED_OFFLINE", "HF_HUB_OFFLINE"))


@dataclass(frozen=True)
class WeightsSource:
    """Where a checkpoint was found."""

    weights: Path
    config: Path | None
    origin: str  # "user", "cache" or "huggingface"
    revision: str

    def sha256(self) -> str:
        h = hashlib.sha256()
        with open(self.weights, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()


def _how_to_get(spec: ModelSpec) -> str:
    repo_dir = spec.hf_repo.split("/")[-1]
    base = f"https://huggingface.co/{spec.hf_repo}/resolve/{spec.hf_revision}"
    return (
        f"Download {base}/{CONFIG_FILENAME} and {base}/{WEIGHTS_FILENAME} into "
        f"{weights_cache_dir() / repo_dir}/ (or set EOEMBED_WEIGHTS_DIR), or pass "
        f"weights='/path/to/{repo_dir}' (a folder with both files) to embed()/load_model() "
        "or --weights on the command line."
    )


def resolve_weights(spec: ModelSpec, weights: str | os.PathLike | None = None) -> WeightsSource:
    """Find the checkpoint for ``spec`` (see module docstring for the order).

    Raises
    ------
    WeightsNotFoundError
        Saying exactly what to download and where to put it.
    """
    if weights is not None:
        path = Path(weights).expanduser()
        if path.is_dir():
            w, c = path / WEIGHTS_FILENAME, path / CONFIG_FILENAME
            if not w.is_file():
                raise WeightsNotFoundError(
                    f"weights={str(path)!r} is a folder without {WEIGHTS_FILENAME}. "
                    f"It must hold {CONFIG_FILENAME} and {WEIGHTS_FILENAME} as published in "
                    f"{spec.hf_repo}. " + _how_to_get(spec)
                )
            return WeightsSource(w, c if c.is_file() else None, "user", f"local:{path}")
        if path.is_file():
            c = path.parent / CONFIG_FILENAME
            return WeightsSource(path, c if c.is_file() else None, "user", f"local:{path}")
        raise WeightsNotFoundError(f"weights={str(path)!r} does not exist. " + _how_to_get(spec))

    cached = weights_cache_dir() / spec.hf_repo.split("/")[-1]
    if (cached / WEIGHTS_FILENAME).is_file():
        c = cached / CONFIG_FILENAME
        return WeightsSource(cached / WEIGHTS_FILENAME, c if c.is_file() else None, "cache", spec.hf_revision)

    if _offline():
        raise WeightsNotFoundError(
            f"No local weights for {spec.name} and downloads are disabled "
            "(EOEMBED_OFFLINE/HF_HUB_OFFLINE). " + _how_to_get(spec)
        )
    try:
        from huggingface_hub import hf_hub_download

        kw = dict(repo_id=spec.hf_repo, revision=spec.hf_revision)
        c = Path(hf_hub_download(filename=CONFIG_FILENAME, **kw))
        w = Path(hf_hub_download(filename=WEIGHTS_FILENAME, **kw))
    except Exception as err:  # network errors come in many types
        raise WeightsNotFoundError(
            f"Could not download {spec.name} weights from Hugging Face "
            f"({spec.hf_repo}@{spec.hf_revision[:10]}): {type(err).__name__}: {err}. " + _how_to_get(spec)
        ) from err
    return WeightsSource(w, c, "huggingface", spec.hf_revision)


def load_state_dict(path: Path) -> dict:
    """Read a checkpoint with ``weights_only=True``; typed errors for bad files."""
    import pickle

    import torch

    if path.stat().st_size == 0:
        raise CorruptWeightsError(f"{path} is empty (0 bytes); download it again.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        text = str(err)
        if "global" in text.lower() or "unsupported" in text.lower():
            raise UnsafeWeightsError(
                f"{path} holds pickled Python objects that torch.load(weights_only=True) refuses "
                f"({_first_line(text)}). eoembed only loads plain tensor state dicts. Re-save it "
                "with torch.save(model.state_dict(), path), or download the published weights.pth."
            ) from err
        raise _corrupt(path, err) from err
    except Exception as err:  # truncated zip, garbage bytes, legacy pickles: all unreadable
        raise _corrupt(path, err) from err
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise CorruptWeightsError(f"{path} does not hold a state dict (got {type(state).__name__}).")
    return state


def _first_line(text: str) -> str:
    return (text.strip().splitlines() or [""])[0][:200]


def _corrupt(path: Path, err: BaseException) -> CorruptWeightsError:
    return CorruptWeightsError(
        f"{path} is not a readable PyTorch checkpoint ({type(err).__name__}: {_first_line(str(err))}). "
        "The download may be incomplete; delete it and download it again."
    )
