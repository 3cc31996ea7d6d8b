"""The registry of cohort sources: one :class:`Source` per cohort type `prepare` reads.

A source is one entry here: its name (the value of ``prepare.source``), a one-line description
and the function that lists its subjects. The options it takes are the keyword parameters of
that function, so they are declared once, where they are used. ``settings.PrepareSettings``
reads the names lazily (:class:`cardiofair.options.Registry`), so a study file is still checked
without numpy.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from typing import Any, Callable

from cardiofair.data import acdc, manifest, mnms, ukbb
from cardiofair.data.case import CaseSource
from cardiofair.errors import SettingsError
from cardiofair.settings import PHANTOM


@dataclass(frozen=True)
class Source:
    """A cohort type: ``discover(root, **options)`` lists its subjects (None for the phantom)."""

    name: str
    description: str
    discover: Callable[..., list[CaseSource]] | None = None

    @property
    def options(self) -> list[str]:
        """The options of `prepare` this source takes: its discovery function's parameters."""
        if self.discover is None:
            return []
        return [name for name in inspect.signature(self.discover).parameters if name != "root"]


SOURCES: dict[str, Source] = {source.name: source for source in (
    Source(PHANTOM, "the simulated cohort cardiofair draws itself (prepare.n, seed, scenario)"),
    Source("ukbb", "UK Biobank in the ukbb_cardiac layout, with a metadata CSV", ukbb.discover),
    Source("acdc", "ACDC challenge: patientNNN folders with Info.cfg", acdc.discover),
    Source("mnms", "M&Ms-1: 4D <code>_sa.nii.gz cines with the information CSV", mnms.discover),
    Source("mnms-copy", "the public copy of part of M&Ms-1: <vendor>/ED_<code>_sa.nii.gz, masks in LABEL_<vendor>/",
           mnms.discover_copy),
    Source("mnms2", "M&Ms-2: <id>_SA_ED/ES.nii.gz with dataset_information.csv", mnms.discover_mnms2),
    Source("manifest", "an in-house cohort listed in a CSV of image and mask paths", manifest.discover),
)}


def discover(source: str, root: str | os.PathLike, metadata: str | os.PathLike | None = None,
             **options: Any) -> list[CaseSource]:
    """The subjects of cohort ``source`` under ``root``; ``options`` go to its discovery function.

    An unknown source or option is a :class:`SettingsError` that lists what the source accepts.
    """
    if source not in SOURCES:
        raise SettingsError(None, f"unknown source {source!r}; choose from {list(SOURCES)}")
    entry = SOURCES[source]
    if entry.discover is None:
        raise SettingsError(None, f"source {source!r} is drawn by prepare, not read from {root}")
    if metadata is not None:
        options["metadata"] = metadata
    unknown = sorted(set(options) - set(entry.options))
    if unknown:
        raise SettingsError(None, f"source {source!r} does not take {unknown}; it takes {entry.options}")
    return entry.discover(root, **options)
