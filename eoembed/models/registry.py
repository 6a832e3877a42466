"""Model registry: names and aliases → :class:`ModelSpec`.

A spec is pure metadata (no torch import): what the model is called, which bands it
reads per modality and in which order, its embedding size, how many timesteps it
accepts, which patch sizes it supports, whether tiles must be square, where its
weights live (Hugging Face repo + pinned revision) and under which licence.
"""

from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass, field
from typing import Callable

from eoembed.exceptions import UnknownModelError


@dataclass(frozen=True)
class WeightFile:
    """One published file of a model's checkpoint.

    Attributes
    ----------
    name:
        File name inside the weights folder (``weights.pth``, ``encoder.pt``…).
    role:
        ``"weights"`` (the state dict), ``"config"`` or ``"normalization"``.
    sha256:
        Expected SHA-256 of the published file at the pinned revision (None when no
        trusted value is known: the file is then hashed and stamped, not checked).
    url:
        Pinned download URL; None for files read from ``hf_repo`` at ``hf_revision``.
    required:
        False when the loader can do without it (e.g. an OlmoEarth ``config.json``).
    """

    name: str
    role: str = "weights"
    sha256: str | None = None
    url: str | None = None
    required: bool = True


@dataclass(frozen=True)
class ModelSpec:
    """Everything eoembed needs to know about one encoder.

    Attributes
    ----------
    name:
        Canonical name, e.g. ``"olmoearth-v1.1-tiny"``.
    family, version, size:
        ``"olmoearth"``, ``"v1.1"``, ``"tiny"``.
    embedding_dim:
        Length of one patch vector (``None`` when it depends on the input).
    modalities:
        Modality name → band names in the order the model reads them.
    required_modalities:
        Modalities that must be present in the cube.
    token_groups:
        Modality name → number of band groups (tokens per patch per timestep).
    max_timesteps:
        Largest number of timesteps one sample may have.
    patch_sizes:
        Allowed patch sizes in pixels.
    default_patch_size:
        Patch size used when the caller does not choose one.
    square_tiles:
        True when the encoder needs H == W (absolute 2-D position encodings).
    native_resolution:
        Pixel size in metres the model was trained at.
    hf_repo, hf_revision:
        Hugging Face repository and the pinned commit the weights are read from.
    license:
        Licence of the weights and of every output computed with them.
    params:
        Approximate encoder parameter count.
    depth, mlp_ratio:
        Encoder depth and MLP ratio (used by the cost estimate).
    attends_across_time:
        False for image encoders that see each timestep on its own (attention cost then
        grows linearly with the number of timesteps).
    macs_per_pixel:
        For convolutional encoders: multiply-accumulates per input pixel and timestep;
        the cost estimate uses it instead of the transformer formula.
    window_positions:
        True when the encoder adds absolute in-window positions to its tokens (a ViT's
        2-D position embedding). Such models support ``position="neutral"`` (every token
        encoded at in-window position (0, 0)), the default in :func:`eoembed.embed`.
    needs_weights:
        False for baselines that have no learned parameters.
    needs_dates:
        True when the encoder reads acquisition dates (OlmoEarth's month encoding):
        a cube without ``time`` coordinates is refused instead of getting a default date.
    description:
        One line for ``eoembed models``.
    weight_files:
        The published checkpoint files (names, expected SHA-256, pinned URLs).
    weights_repo, weights_revision:
        Where non-Hugging-Face weights come from (e.g. ``github:nasaharvest/galileo``)
        and the pinned commit.
    weights_dirname:
        Folder name under ``$EOEMBED_WEIGHTS_DIR`` (default: the Hugging Face repo
        name, else the model name).
    num_heads:
        Attention heads (for architectures built from the spec).
    missing_bands_note:
        How the model handles absent bands (ends the missing-band warning of ``embed``).
    pixel_series:
        True for per-pixel time-series encoders (Presto): one sample per pixel, no
        spatial context, so no halo is encoded (used by the cost estimate).
    """

    name: str
    family: str
    version: str
    size: str
    embedding_dim: int | None
    modalities: dict[str, tuple[str, ...]]
    required_modalities: tuple[str, ...] = ("sentinel2_l2a",)
    token_groups: dict[str, int] = field(default_factory=dict)
    max_timesteps: int = 12
    patch_sizes: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8)
    default_patch_size: int = 4
    square_tiles: bool = False
    native_resolution: float = 10.0
    hf_repo: str | None = None
    hf_revision: str | None = None
    license: str = "Apache-2.0"
    params: int | None = None
    depth: int = 0
    mlp_ratio: float = 4.0
    attends_across_time: bool = True
    macs_per_pixel: float | None = None
    window_positions: bool = False
    needs_weights: bool = True
    needs_dates: bool = False
    description: str = ""
    aliases: tuple[str, ...] = ()
    weight_files: tuple[WeightFile, ...] = ()
    weights_repo: str | None = None
    weights_revision: str | None = None
    weights_dirname: str | None = None
    num_heads: int | None = None
    missing_bands_note: str = ""
    pixel_series: bool = False

    @property
    def source_repo(self) -> str | None:
        """Where the weights come from: the Hugging Face repo or ``weights_repo``."""
        return self.hf_repo or self.weights_repo

    @property
    def source_revision(self) -> str | None:
        """The pinned commit the weights are read at."""
        return self.hf_revision or self.weights_revision

    @property
    def cache_dirname(self) -> str:
        """Folder name of this model's weights under ``$EOEMBED_WEIGHTS_DIR``."""
        if self.weights_dirname:
            return self.weights_dirname
        return self.hf_repo.split("/")[-1] if self.hf_repo else self.name

    @property
    def weights_source(self) -> str:
        """One line for listings: ``repo@commit`` or ``none``."""
        if not self.needs_weights:
            return "none"
        if not self.source_repo:
            return "local folder only (weights=PATH or $EOEMBED_WEIGHTS_DIR)"
        rev = self.source_revision or ""
        return f"{self.source_repo}@{rev[:8]}" if rev else self.source_repo

    @property
    def bands(self) -> dict[str, tuple[str, ...]]:
        """Alias of :attr:`modalities` (modality → band order)."""
        return self.modalities

    def to_dict(self) -> dict:
        """A JSON-serialisable summary (used by ``eoembed models --json``)."""
        return {
            "name": self.name,
            "aliases": list(self.aliases),
            "family": self.family,
            "version": self.version,
            "size": self.size,
            "embedding_dim": self.embedding_dim,
            "modalities": {k: list(v) for k, v in self.modalities.items()},
            "max_timesteps": self.max_timesteps,
            "patch_sizes": list(self.patch_sizes),
            "default_patch_size": self.default_patch_size,
            "square_tiles": self.square_tiles,
            "hf_repo": self.hf_repo,
            "hf_revision": self.hf_revision,
            "license": self.license,
            "params": self.params,
            "weights_source": self.weights_source,
            "weight_files": [
                {"name": f.name, "role": f.role, "sha256": f.sha256, "url": f.url} for f in self.weight_files
            ],
        }


_REGISTRY: dict[str, ModelSpec] = {}
_ALIASES: dict[str, str] = {}
_LOADERS: dict[str, Callable] = {}


def register_model(spec: ModelSpec, loader: Callable | None = None) -> ModelSpec:
    """Add ``spec`` (and its aliases) to the registry; ``loader(spec, weights, device)`` builds it."""
    key = spec.name.lower()
    if key in _REGISTRY or key in _ALIASES:
        raise ValueError(f"model name {spec.name!r} is already registered")
    _REGISTRY[key] = spec
    for alias in spec.aliases:
        if alias.lower() in _REGISTRY or alias.lower() in _ALIASES:
            raise ValueError(f"alias {alias!r} is already registered")
        _ALIASES[alias.lower()] = key
    if loader is not None:
        _LOADERS[spec.family] = loader
    return spec


def list_models(filter: str = "*", *, pretrained: bool | None = None) -> list[str]:
    """Names of registered models matching the glob ``filter``.

    Parameters
    ----------
    filter:
        fnmatch pattern over canonical names and aliases, e.g. ``"*v1.2*"``.
    pretrained:
        True: only models with learned weights; False: only baselines.
    """
    out = []
    for key, spec in _REGISTRY.items():
        if pretrained is not None and spec.needs_weights != pretrained:
            continue
        names = [spec.name, *spec.aliases]
        if any(fnmatch.fnmatch(n.lower(), filter.lower()) for n in names):
            out.append(spec.name)
    return out


def get_model_spec(name: str | ModelSpec) -> ModelSpec:
    """Look up a model by canonical name or alias (case-insensitive).

    Raises
    ------
    UnknownModelError
        With the closest registered names as suggestions.
    """
    if isinstance(name, ModelSpec):
        return name
    if not isinstance(name, str):
        raise UnknownModelError(
            f"model must be a name such as 'tiny' or 'olmoearth-v1.2-small', got {type(name).__name__}"
        )
    key = name.lower().strip()
    key = _ALIASES.get(key, key)
    if key in _REGISTRY:
        return _REGISTRY[key]
    choices = sorted([*(s.name for s in _REGISTRY.values()), *_ALIASES])
    close = difflib.get_close_matches(key, choices, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise UnknownModelError(
        f"Unknown model {name!r}.{hint} Available models: {', '.join(choices)}. "
        "Run `eoembed models` (or eoembed.list_models()) to see them all."
    )


def get_loader(spec: ModelSpec) -> Callable:
    """The function that builds an encoder for ``spec``'s family."""
    return _LOADERS[spec.family]
