"""Prepared-like phantom arrays for the metrics tests."""

import pandas as pd

from cardiofair.data.phantom import phantom_cohort
from cardiofair.data.prepare import normalise_intensity
from cardiofair.data.summary import attribute_table
from cardiofair.metrics.evaluators import stack


def phantom_arrays(n, seed):
    """(images, masks, binned attributes) of ``n`` prepared-like phantom subjects."""
    records = list(phantom_cohort(n, seed))
    for record in records:
        record.image = normalise_intensity(record.image)
    images, masks = stack(records)
    return images, masks, attribute_table(pd.DataFrame([r.meta for r in records]))
