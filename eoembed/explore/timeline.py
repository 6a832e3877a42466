"""Time in the explorer: which timestep is shown and searched, and how dates are labelled.

For embedding cubes with a ``time`` dim (``embed(..., pool_time=False)``) the explorer
shows the mean of all timesteps (the default view) or one of them
(:meth:`~eoembed.explore.state.ExplorerState.set_time`, the panel's time slider); the
time-dependent layers (:data:`TIME_LAYERS`) carry the date in their name, e.g.
``"PCA-RGB 2024-03-15"``. A search click on such a cube also computes the place's
trajectory through the season (:func:`eoembed.trajectory`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from eoembed.exceptions import DimensionError

__all__ = ["TIME_LAYERS", "TimeAxis", "time_label"]

#: Layers whose image follows the time slider (their titles carry the date shown).
TIME_LAYERS = ("PCA-RGB", "PCA-RGB detail", "similarity", "similarity detail", "matches")


def time_label(t: Any) -> str:
    """A short label of a time coordinate value: ``2024-03-15`` (``2024-03-15 10:30`` with a time of day)."""
    import datetime

    if isinstance(t, (np.datetime64, datetime.datetime)):  # pandas Timestamps are datetimes
        import pandas as pd

        ts = pd.Timestamp(t)
        return ts.strftime("%Y-%m-%d") if ts == ts.normalize() else ts.strftime("%Y-%m-%d %H:%M")
    return str(t)


def no_time(what: str) -> DimensionError:
    return DimensionError(f"{what} embedding cube has no 'time' dimension (it was embedded time-pooled). "
                          "Embed with eoembed.embed(cube, ..., pool_time=False) for per-timestep vectors.")


class TimeAxis:
    """The cube's timesteps and the one shown (``label``/``pos``; None: the mean of all)."""

    def __init__(self, emb: xr.DataArray, time: Any = None) -> None:
        self.times = emb["time"].values if "time" in emb.dims else None
        self.label, self.pos = self.resolve(time)

    def resolve(self, time: Any) -> tuple[Any, int | None]:
        """``time`` (None, a position, a label or date string) → ``(label, position)``; typed errors."""
        from eoembed.analysis._common import select_time

        if time is None:
            return None, None
        if self.times is None:
            raise no_time(f"time={time!r} was given but the")
        positions = xr.DataArray(np.arange(len(self.times)), dims="time", coords={"time": self.times})
        pos = int(select_time(positions, time, what="time").values)
        return self.times[pos], pos

    def show(self, time: Any) -> None:
        """Make ``time`` the timestep shown (refused dates change nothing)."""
        self.label, self.pos = self.resolve(time)

    def suffix(self) -> str:
        """What the time layers' names end with: ``" 2024-03-15"``, ``" (mean of 4 dates)"`` or ``""``."""
        if self.times is None:
            return ""
        if self.label is None:
            return f" (mean of {len(self.times)} dates)"
        return f" {time_label(self.label)}"

    def from_text(self, text: str | None):
        """The cube's time label whose ``str`` was saved in a session (None stays None)."""
        from eoembed.exceptions import ParameterError

        if text is None:
            return None
        for t in self.times:
            if str(t) == text:
                return t
        raise ParameterError(f"The session's time {text!r} is not one of this cube's times; open it on the cube "
                             "it was saved from.")

    def flat(self, da: xr.DataArray, pos: Any = "shown") -> xr.DataArray:
        """A ``(…, y, x)`` view of ``da`` without ``time``: the timestep shown (or ``pos``), or the mean."""
        from eoembed.explore.layers import display_2d

        return display_2d(da, self.pos if pos == "shown" else pos)
