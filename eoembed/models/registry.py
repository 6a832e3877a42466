"""Model registry: names and aliases → :class:`ModelSpec` (with the loader that builds it).

A spec is metadata (no torch import): what the model is called, which bands it reads
per modality and in which order, its embedding size, how many timesteps it accepts,
which patch sizes it supports, whether tiles must be square; a record of its weights
apart (:class:`PretrainedWeights`: repository, pinned revision, files and SHA-256,
licence); and the function that builds it. ``register_model(spec, loader)`` maps a
name to both, as timm's registry does.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from dataclasses import dataclass, field, fields, replace
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


#: A commit id: what a revision must be for the weights to count as pinned.
_COMMIT = re.compile(r"[0-9a-f]{40}")
#: Licence line of models without learned weights.
NO_WEIGHTS_LICENSE = "CC0-1.0 (no weights; outputs carry the input data's licence)"


@dataclass(frozen=True)
class PretrainedWeights:
    """Where a model's weights come from: a record of its own beside the architecture
    (like timm's ``PretrainedCfg``).

    Attributes
    ----------
    repo:
        A Hugging Face repository (``allenai/OlmoEarth-v1_1-Nano``), or
        ``github:owner/name`` for files fetched from pinned URLs; None when the weights
        are only read from a local folder (``weights=PATH``).
    revision:
        The commit the files are read at (40 hex digits: pinned). A branch name means
        unpinned, which :attr:`notes` must say.
    files:
        The published checkpoint files (names, expected SHA-256, pinned URLs).
    license:
        Licence of the weights and of every output computed with them.
    url:
        Page where people find the weights (None: derived from ``repo``).
    dirname:
        Folder name under ``$EOEMBED_WEIGHTS_DIR`` (default: the repository name, else
        the model name).
    notes:
        Caveats about the source (unpinned revision, unconfirmed hashes…).
    """

    repo: str | None = None
    revision: str | None = None
    files: tuple[WeightFile, ...] = ()
    license: str = "unspecified"
    url: str | None = None
    dirname: str | None = None
    notes: str = ""

    @property
    def hf_repo(self) -> str | None:
        """The Hugging Face repository id, or None for other sources."""
        return self.repo if self.repo and ":" not in self.repo else None

    @property
    def pinned(self) -> bool:
        """True when :attr:`revision` is a commit id (a moved branch cannot change results)."""
        return bool(self.revision and _COMMIT.fullmatch(self.revision))

    @property
    def page(self) -> str | None:
        """:attr:`url`, else the repository's page at the revision."""
        if self.url:
            return self.url
        if self.hf_repo:
            return f"https://huggingface.co/{self.hf_repo}" + (f"/tree/{self.revision}" if self.revision else "")
        if self.repo and self.repo.startswith("github:"):
            return f"https://github.com/{self.repo[7:]}" + (f"/tree/{self.revision}" if self.revision else "")
        return None


@dataclass(frozen=True)
class ModelSpec:
    """Everything eoembed needs to know about one encoder: its architecture and inputs,
    the record of its weights (:class:`PretrainedWeights`), and the function that builds it.

    The spec is frozen and travels whole: :func:`eoembed.embed` puts the spec itself (not
    its name) into the dask graph, and the per-process model cache is keyed on a token of
    all its fields, so ``dataclasses.replace(spec, ...)`` or a spec that was never
    registered runs on every worker exactly as in the client.

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
    needs_dates:
        True when the encoder reads acquisition dates (OlmoEarth's month encoding):
        a cube without ``time`` coordinates is refused instead of getting a default date.
    description:
        One line for ``eoembed models``.
    aliases:
        Other names :func:`get_model_spec` accepts.
    num_heads:
        Attention heads (for architectures built from the spec).
    missing_bands_note:
        How the model handles absent bands (ends the missing-band warning of ``embed``).
    pixel_series:
        True for per-pixel time-series encoders (Presto): one sample per pixel, no
        spatial context, so no halo is encoded (used by the cost estimate).
    weights:
        Where the weights come from (:class:`PretrainedWeights`); None for baselines
        without learned parameters.
    loader:
        ``loader(spec, weights=None, device=None) -> Encoder``. Set by
        :func:`register_model`; a spec without one takes the loader registered under its
        name, else its family's (:func:`get_loader`). It must be importable by name
        (a module-level function) to run on ``dask.distributed`` workers.
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
    params: int | None = None
    depth: int = 0
    mlp_ratio: float = 4.0
    attends_across_time: bool = True
    macs_per_pixel: float | None = None
    window_positions: bool = False
    needs_dates: bool = False
    description: str = ""
    aliases: tuple[str, ...] = ()
    num_heads: int | None = None
    missing_bands_note: str = ""
    pixel_series: bool = False
    weights: PretrainedWeights | None = None
    loader: Callable | None = None

    # -- views of the weights record (read-only; change them with replace(spec, weights=...)) --
    @property
    def needs_weights(self) -> bool:
        """False for baselines without learned parameters (no :attr:`weights` record)."""
        return self.weights is not None

    @property
    def license(self) -> str:
        """Licence of the weights and of the outputs computed with them."""
        return self.weights.license if self.weights is not None else NO_WEIGHTS_LICENSE

    @property
    def weight_files(self) -> tuple[WeightFile, ...]:
        return self.weights.files if self.weights is not None else ()

    @property
    def hf_repo(self) -> str | None:
        return self.weights.hf_repo if self.weights is not None else None

    @property
    def hf_revision(self) -> str | None:
        """The revision Hugging Face files are read at (``"main"`` when the record pins none)."""
        return (self.weights.revision or "main") if self.hf_repo else None

    @property
    def source_repo(self) -> str | None:
        """Where the weights come from: the Hugging Face repo or ``github:owner/name``."""
        return self.weights.repo if self.weights is not None else None

    @property
    def source_revision(self) -> str | None:
        """The revision the weights are read at."""
        return self.weights.revision if self.weights is not None else None

    @property
    def cache_dirname(self) -> str:
        """Folder name of this model's weights under ``$EOEMBED_WEIGHTS_DIR``."""
        if self.weights is not None and self.weights.dirname:
            return self.weights.dirname
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
            "weights_page": self.weights.page if self.weights is not None else None,
            "weight_files": [
                {"name": f.name, "role": f.role, "sha256": f.sha256, "url": f.url} for f in self.weight_files
            ],
        }


#: Canonical name (lower case) → the registered spec, its loader attached.
_REGISTRY: dict[str, ModelSpec] = {}
_ALIASES: dict[str, str] = {}


def register_model(spec: ModelSpec, loader: Callable | None = None) -> ModelSpec:
    """Register ``spec`` (and its aliases) under its name, built by ``loader``.

    Like timm's registry, the *name* is the model: it maps to this spec and this loader.
    ``loader(spec, weights=None, device=None)`` returns an :class:`eoembed.encode.Encoder`;
    it is attached to the spec (``spec.loader``), so the spec :func:`get_model_spec`
    returns, and any ``dataclasses.replace`` of it, carries the loader wherever it goes
    (dask workers included). Without ``loader``, ``spec.loader`` is used.

    Returns
    -------
    ModelSpec
        The registered spec (``spec`` with its loader).

    Raises
    ------
    ValueError
        The name or an alias is taken, or there is no loader.
    """
    loader = loader if loader is not None else spec.loader
    if not callable(loader):
        raise ValueError(f"register_model({spec.name!r}) needs a loader: register_model(spec, loader) "
                         "with loader(spec, weights=None, device=None) -> Encoder, or a spec with .loader set")
    key = spec.name.lower()
    names = [key, *(a.lower() for a in spec.aliases)]
    taken = [n for n in names if n in _REGISTRY or n in _ALIASES]
    if taken or len(set(names)) < len(names):
        raise ValueError(f"model name(s) {taken or names} of {spec.name!r} are already registered; "
                         "give the spec another name (dataclasses.replace(spec, name=..., aliases=()))")
    spec = spec if spec.loader is loader else replace(spec, loader=loader)
    _REGISTRY[key] = spec
    for alias in names[1:]:
        _ALIASES[alias] = key
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
    """The function that builds ``spec``: its own :attr:`~ModelSpec.loader`, else the loader
    registered under its name, else the one loader its family's registered models share.

    Raises
    ------
    UnknownModelError
        No loader can be found (an unknown family, or one whose models use several).
    """
    if spec.loader is not None:
        return spec.loader
    registered = _REGISTRY.get(spec.name.lower())
    if registered is not None:
        return registered.loader
    loaders = {s.loader for s in _REGISTRY.values() if s.family == spec.family}
    if len(loaders) == 1:
        return loaders.pop()
    why = "no registered model has" if not loaders else f"its registered models use {len(loaders)} loaders for"
    raise UnknownModelError(
        f"{spec.name!r} is not registered and {why} family {spec.family!r}, so eoembed does not know how to "
        "build it. Give the spec a loader (dataclasses.replace(spec, loader=my_loader), a module-level "
        "function loader(spec, weights=None, device=None)) or register it: eoembed.models.register_model(spec, "
        "my_loader)."
    )


def with_loader(spec: ModelSpec) -> ModelSpec:
    """``spec`` with its loader attached (:func:`get_loader`): self-sufficient on any worker."""
    return spec if spec.loader is not None else replace(spec, loader=get_loader(spec))


def spec_origin(spec: ModelSpec) -> str | None:
    """None for a registered spec; else how it departs from the registry (stamped in attrs).

    ``"unregistered"``, or ``"modified: num_heads, weights"`` (the fields that differ from
    the spec registered under the same name).
    """
    registered = _REGISTRY.get(spec.name.lower())
    if registered is None:
        return "unregistered"
    changed = [f.name for f in fields(ModelSpec) if f.name != "loader" or spec.loader is not None
               if getattr(spec, f.name) != getattr(registered, f.name)]
    return f"modified: {', '.join(changed)}" if changed else None
