import pytest
from cohort_fixtures import write_acdc_patient

from cardiofair.data import acdc, manifest, mnms, ukbb
from cardiofair.data.sources import SOURCES, discover


def test_registry_names_every_loader():
    assert SOURCES == {"ukbb": ukbb.discover, "acdc": acdc.discover, "mnms": mnms.discover,
                       "mnms2": mnms.discover_mnms2, "manifest": manifest.discover}


def test_discover_passes_options_to_the_loader(tmp_path):
    write_acdc_patient(tmp_path / "training" / "patient007", group="HCM")
    sources = discover("acdc", tmp_path, required=())
    assert [s.subject_id for s in sources] == ["patient007"]
    assert sources[0].load().meta["diagnosis"] == "hypertrophic cardiomyopathy"


def test_discover_rejects_unknown_sources_and_options(tmp_path):
    with pytest.raises(ValueError, match="unknown source 'kaggle'.*'ukbb'"):
        discover("kaggle", tmp_path)
    with pytest.raises(ValueError, match=r"source 'acdc' does not take \['metadata'\]"):
        discover("acdc", tmp_path, metadata=tmp_path / "extra.csv")
    with pytest.raises(ValueError, match=r"does not take \['colums'\]; it takes \['metadata', 'columns', 'required'\]"):
        discover("ukbb", tmp_path, colums={})
