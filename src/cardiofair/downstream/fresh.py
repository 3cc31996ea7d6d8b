"""Fresh phantom subjects for the fairness stage (no torch).

A phantom cohort's model is known, so two things a real cohort cannot have are drawn from it:

- a large test cohort balanced over sex x age decade x diagnosis, so that a gap between the
  sexes is measured on hundreds of positives of each rather than a handful (the split's own
  test subjects of a 2,000-subject phantom hold 18 women with heart failure);
- the ``oracle`` arm: for every record the plan asks for, a new subject of that cell, i.e. what a
  perfect generator would add at the same counts, the ceiling of any synthetic arm.

Both come from the phantom configuration the real dataset was prepared with (its
``prepare.json``), prepared as it was, on random streams no prepared subject uses
(:data:`cardiofair.data.phantom.FRESH_STREAMS`), so neither ever repeats a training, validation
or test subject.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cardiofair.data.phantom import PhantomConfig
from cardiofair.data.prepare import PhantomModel, draw_fresh
from cardiofair.data.records import ImageSet
from cardiofair.diagnoses import HEALTHY, HEART_FAILURE
from cardiofair.plan import dose_count
from cardiofair.prompts import age_bin


def balanced_cells(config: PhantomConfig, subjects: int) -> list[dict[str, str]]:
    """``subjects`` cells, one per subject, spread as evenly as possible over sex x age decade
    x diagnosis (the decades the phantom's age range covers)."""
    first, last = (int(age_bin(a)[:-1]) for a in (config.age_min, config.age_max))
    cells = [{"sex": sex, "age": f"{decade}s", "diagnosis": diagnosis}
             for sex in ("Female", "Male") for decade in range(first, last + 1, 10)
             for diagnosis in (HEALTHY, HEART_FAILURE)]
    return [cells[i % len(cells)] for i in range(subjects)]


def planned_subjects(cells: pd.DataFrame, dose: float = 1.0) -> pd.DataFrame:
    """One row per record the plan asks for at ``dose``: each row of ``cells`` (planned
    attributes, ``diagnosis``, ``synthetic_count``) ``round(dose x synthetic_count)`` times, with
    its ``cell``, ``cell_rank`` and ``planned_count``, in order of rank relative to the count as
    `cardiofair generate` orders them: the subjects of a smaller dose come first, so drawing
    subject i of this list gives every dose the same subjects."""
    columns = [c for c in cells.columns if c not in ("synthetic_count", "source")]
    rows = [{**{c: str(row[c]) for c in columns}, "cell": "|".join(str(row[c]) for c in columns), "cell_rank": k,
             "planned_count": int(row["synthetic_count"])}
            for row in cells.to_dict("records") for k in range(dose_count(int(row["synthetic_count"]), dose))]
    table = pd.DataFrame(rows, columns=[*columns, "cell", "cell_rank", "planned_count"])
    order = np.lexsort((np.arange(len(table)), table["cell_rank"] / table["planned_count"].clip(lower=1)))
    return table.iloc[order].reset_index(drop=True)


def draw_oracle(model: PhantomModel, cells: pd.DataFrame, dose: float = 1.0, workers: int | None = None) -> ImageSet:
    """The oracle arm's subjects: :func:`planned_subjects` at ``dose`` drawn from ``model`` on
    the ``oracle`` stream, one mid-ventricular record each (as the synthetic arm has one record
    per planned record), with the ``cell``, ``cell_rank`` and ``planned_count`` that pick a
    smaller dose's subjects."""
    subjects = planned_subjects(cells, dose)
    ranks = ["cell", "cell_rank", "planned_count"]
    drawn = draw_fresh(model, subjects.drop(columns=ranks).to_dict("records"), "oracle", mid_slice_only=True,
                       workers=workers)
    return ImageSet(pd.concat([drawn.rows.drop(columns=ranks, errors="ignore"), subjects[ranks]], axis=1),
                    drawn.images, drawn.masks)

