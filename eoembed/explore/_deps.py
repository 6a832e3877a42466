"""The explorer's optional widget libraries: checked once, with the install hint."""

from __future__ import annotations

import warnings

from eoembed.exceptions import MissingOptionalDependency

_VIZ_MODULES = (("ipywidgets", "ipywidgets"), ("ipyleaflet", "ipyleaflet"), ("leafmap", "leafmap"),
                ("bqplot", "bqplot"), ("matplotlib", "matplotlib"), ("PIL", "pillow"))


def _require_viz() -> None:
    import importlib

    missing = []
    with warnings.catch_warnings():  # importing leafmap adds a global "ignore all warnings" filter: keep it local
        for mod, dist in _VIZ_MODULES:
            try:
                importlib.import_module(mod)
            except ImportError:
                missing.append(dist)
    if missing:
        raise MissingOptionalDependency(
            f"The map explorer needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not "
            "installed. Install the viz extra: pip install 'eoembed[viz]' (and 'eoembed[search]' for "
            "search and few-shot), then restart the kernel."
        )
