import pytest
from cohort_fixtures import write_acdc_patient

from cardiofair.data.sources import SOURCES, discover
from cardiofair.settings import PHANTOM


def test_every_source_is_described_and_every_real_one_takes_the_required_metadata():
    assert list(SOURCES)[0] == PHANTOM and SOURCES[PHANTOM].options == []
    for name, source in SOURCES.items():
        assert source.name == name and source.description, name
        # --require reaches every real cohort: the metadata a study cannot do without.
        assert name == PHANTOM or "required" in source.options, name


def test_discover_passes_options_to_the_loader(tmp_path):
    write_acdc_patient(tmp_path / "training" / "patient007", group="HCM")
    sources = discover("acdc", tmp_path, required=())
    assert [s.subject_id for s in sources] == ["patient007"]
    assert sources[0].load().meta["diagnosis"] == "hypertrophic cardiomyopathy"


def test_discover_rejects_unknown_sources_and_options(tmp_path):
    with pytest.raises(ValueError, match="unknown source 'kaggle'.*'ukbb'"):
        discover("kaggle", tmp_path)
    with pytest.raises(ValueError, match="source 'phantom' is drawn by prepare"):
        discover(PHANTOM, tmp_path)
    with pytest.raises(ValueError, match=r"source 'acdc' does not take \['metadata'\]"):
        discover("acdc", tmp_path, metadata=tmp_path / "extra.csv")
    with pytest.raises(ValueError, match=r"does not take \['colums'\]; it takes \['metadata', 'columns', 'required'\]"):
        discover("ukbb", tmp_path, colums={})
