"""The quality metric registry: every metric names a compute function that exists, its section
round-trips through QualityResult in the registry's order, and metrics that share a page of the
report are shown together, and the two-sample test's verdict needs its interval."""

import importlib
import inspect
from dataclasses import fields

import pytest

from cardiofair.metrics.quality_metrics import METRICS, c2st_verdict, shown_together
from cardiofair.results import QualityResult, ResultError


def test_every_metric_names_a_compute_function_and_a_section_of_its_own():
    names = [metric.name for metric in METRICS]
    assert len(set(names)) == len(names)
    assert not set(names) & {f.name for f in fields(QualityResult)}
    for metric in METRICS:
        module, _, function = metric.compute.partition(":")
        compute = getattr(importlib.import_module(module), function)
        assert list(inspect.signature(compute).parameters) == ["context"], metric.name


def test_sections_keep_the_registry_order_and_a_missing_one_says_what_to_run():
    document = {"schema": 1, "real": {}, "synthetic": {}, "evaluators": {}, "cell_attributes": ["sex"],
                **{metric.name: {"overall": {"status": "ok"}} for metric in METRICS}}
    result = QualityResult.from_dict(document)
    assert list(result.to_dict()) == list(document)
    assert result.section(METRICS[0].name) == {"overall": {"status": "ok"}}
    older = QualityResult.from_dict({k: v for k, v in document.items() if k != METRICS[-1].name})
    with pytest.raises(ResultError, match=f"lacks {METRICS[-1].name}: .*run `cardiofair quality` again"):
        older.section(METRICS[-1].name)


def test_metrics_that_share_a_page_are_shown_together_in_registry_order():
    groups = shown_together()
    assert sorted((m for group in groups for m in group), key=METRICS.index) == list(METRICS)
    firsts = [METRICS.index(group[0]) for group in groups]
    assert firsts == sorted(firsts)
    for group in groups:
        assert len({metric.page or metric.name for metric in group}) == 1
    prompt = next(group for group in groups if group[0].name == "prompt_fidelity")
    assert [m.name for m in prompt] == ["prompt_fidelity", "prompt_effects"]


def test_the_two_sample_verdict_needs_an_interval_clear_of_the_reference():
    scope = {"status": "ok", "auroc": {"synthetic": 0.97, "real_reference": 0.52},
             "auroc_interval": {"synthetic": [0.94, 0.99], "real_reference": [0.46, 0.58]}}
    assert "AUROC 0.970" in c2st_verdict({"overall": scope})[0]
    # Two subjects a side leave the bootstrap interval undefined (stored as null).
    undefined = {**scope, "auroc": {"synthetic": 1.0, "real_reference": 0.8},
                 "auroc_interval": {"synthetic": [None, None], "real_reference": [None, None]}}
    assert c2st_verdict({"overall": undefined}) == []
