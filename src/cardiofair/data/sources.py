"""The registry of real-cohort loaders: a source name -> its discovery function."""

from __future__ import annotations

import inspect
import os
from typing import Any, Callable

from cardiofair.data import acdc, manifest, mnms, ukbb
from cardiofair.data.case import CaseSource
from cardiofair.errors import SettingsError

SOURCES: dict[str, Callable[..., list[CaseSource]]] = {
    "ukbb": ukbb.discover,
    "acdc": acdc.discover,
    "mnms": mnms.discover,
    "mnms2": mnms.discover_mnms2,
    "manifest": manifest.discover,
}


def discover(source: str, root: str | os.PathLike, metadata: str | os.PathLike | None = None,
             **options: Any) -> list[CaseSource]:
    """The subjects of cohort ``source`` under ``root``; ``options`` go to its discovery function.

    An unknown source or option is a :class:`SettingsError` that lists what the source accepts.
    """
    if source not in SOURCES:
        raise SettingsError(None, f"unknown source {source!r}; choose from {list(SOURCES)}")
    function = SOURCES[source]
    if metadata is not None:
        options["metadata"] = metadata
    accepted = [name for name in inspect.signature(function).parameters if name != "root"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise SettingsError(None, f"source {source!r} does not take {unknown}; it takes {accepted}")
    return function(root, **options)
