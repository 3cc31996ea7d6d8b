"""The Fréchet Radiomics Distance (frd-score, an optional extra): the figure is frd-score's own,
real against real is closer than real against blurred real, the quality section puts the
synthetic figure beside its real reference, and without the extra `quality.frd` fails at once
with the install command. The tests that extract features need frd-score and pyradiomics
(`make install-frd`) and are skipped, saying so, without them."""

import sys
import tempfile
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from phantom_arrays import phantom_arrays
from scipy.ndimage import gaussian_filter

from cardiofair.cli import main
from cardiofair.data.phantom import PhantomConfig
from cardiofair.data.records import ImageSet
from cardiofair.metrics import radiomics
from cardiofair.metrics.quality import measure_frd
from cardiofair.metrics.quality_metrics import frd_summary, frd_table
from cardiofair.settings import QualitySettings


def _installed() -> bool:
    try:
        radiomics.require()
    except radiomics.MissingFrdError:
        return False
    return True


needs_frd = pytest.mark.skipif(not _installed(), reason="frd-score and pyradiomics are not installed: "
                               f"`{radiomics.INSTALL}` installs them (the FRD extra)")
SPACING = PhantomConfig().pixel_spacing_mm


def _ed(images, masks):
    """The ED frames and their heart regions."""
    return images[:, 0], masks[:, 0] > 0


@needs_frd
def test_the_distance_is_frd_scores_own_compute_frd():
    from frd_score import frd

    (a, a_masks, _), (b, b_masks, _) = phantom_arrays(10, 0), phantom_arrays(10, 2)
    ours = radiomics.frechet_radiomics_distance(radiomics.radiomic_features(*_ed(a, a_masks), SPACING),
                                                radiomics.radiomic_features(*_ed(b, b_masks), SPACING))
    with tempfile.TemporaryDirectory() as first, tempfile.TemporaryDirectory() as second:
        a_files, a_regions = radiomics.write_pairs(first, *_ed(a, a_masks), SPACING)
        b_files, b_regions = radiomics.write_pairs(second, *_ed(b, b_masks), SPACING)
        theirs = frd.compute_frd([a_files, b_files], paths_masks=[a_regions, b_regions], num_workers=1)
    assert ours["frd"] == pytest.approx(theirs, rel=1e-9)
    assert ours["n_reference"] == ours["n_other"] == 10 and ours["n_features"] > 300


@needs_frd
def test_real_against_real_is_closer_than_real_against_blurred_real():
    (train, train_masks, _), (other, other_masks, _) = phantom_arrays(16, 0), phantom_arrays(16, 2)
    blurred = gaussian_filter(other, sigma=(0, 0, 1.5, 1.5)).astype(np.float32)
    workers = radiomics.workers()
    reference = radiomics.radiomic_features(*_ed(train, train_masks), SPACING, workers)
    real = radiomics.radiomic_features(*_ed(other, other_masks), SPACING, workers)
    told = radiomics.radiomic_features(*_ed(blurred, other_masks), SPACING, workers)
    same = radiomics.frechet_radiomics_distance(reference, real)["frd"]
    # FRD is the log of the squared distance: blur moves it far more than a factor 3 (1.1).
    assert same + 3 < radiomics.frechet_radiomics_distance(reference, told)["frd"]


def _image_set(n, seed, cell_of):
    images, masks, attributes = phantom_arrays(n, seed)
    rows = pd.DataFrame({"record_id": [f"s{seed}-{i}" for i in range(n)], "pixel_spacing_mm": SPACING})
    return ImageSet(rows, images, masks), attributes["sex"].map(cell_of)


@needs_frd
def test_the_section_puts_each_frame_beside_its_real_reference_at_the_same_count_per_cell():
    sets, keys = {}, {}
    for name, n, seed in (("train", 24, 0), ("held_out", 8, 1), ("synthetic", 10, 2)):
        sets[name], keys[name] = _image_set(n, seed, lambda sex: sex)
    sets["synthetic"].images[:] = gaussian_filter(sets["synthetic"].images, sigma=(0, 0, 1.5, 1.5))
    context = SimpleNamespace(settings=QualitySettings(frd=True, frd_train_multiple=2), sets=sets, keys=keys,
                              log=lambda text: None)
    section = measure_frd(context).section
    scope = section["overall"]
    assert scope["status"] == "ok" and section["version"] == "v1" and "pyradiomics" in section["package"]
    matched = {cell: min(keys["synthetic"].eq(cell).sum(), keys["held_out"].eq(cell).sum())
               for cell in keys["synthetic"].unique()}
    assert scope["n_synthetic"] == scope["n_real_held_out"] == sum(matched.values())
    assert scope["n_real_train"] == sum(min(2 * n, keys["train"].eq(cell).sum()) for cell, n in matched.items())
    assert list(scope["frames"]) == ["ED", "ES"]
    for frame in scope["frames"].values():
        assert frame["n_images"] == {"synthetic": scope["n_synthetic"], "real_held_out": scope["n_real_held_out"],
                                     "real_train": scope["n_real_train"]}
        assert frame["frd"]["synthetic"] > frame["frd"]["real_reference"] + 3
    assert len(frd_table(section).rows) == 2 and frd_summary(section)[0].startswith("FRD v1 ED")


def test_off_by_default_the_section_says_it_was_not_run():
    assert QualitySettings().frd is False
    section = measure_frd(SimpleNamespace(settings=QualitySettings())).section
    assert section["overall"] == {"status": "not run (quality.frd is off)"}
    assert frd_summary(section) == ["FRD: not run (quality.frd is off)"]
    assert frd_table(section).notes == ["Not measured: not run (quality.frd is off)"]


def test_without_the_extra_quality_frd_fails_at_once_with_the_install_command(split_phantom, tmp_path, monkeypatch,
                                                                              capsys):
    # None in sys.modules makes the import fail, as where pyradiomics is not installed.
    monkeypatch.setitem(sys.modules, "radiomics", None)
    monkeypatch.setitem(sys.modules, "radiomics.featureextractor", None)
    with pytest.raises(radiomics.MissingFrdError, match="make install-frd"):
        radiomics.require()
    monkeypatch.setenv("CARDIOFAIR_CACHE", str(tmp_path / "cache"))
    real = split_phantom(40, 32, test=0.25, val=0.25)
    # The real dataset as the synthetic one too: loading it would fail otherwise, so the check comes first.
    assert main(["quality", "--real", str(real), "--synthetic", str(real), "--out", str(tmp_path / "q"),
                 "--frd"]) == 1
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "quality.frd needs frd-score and pyradiomics" in error
    assert "`make install-frd`" in error
    assert not (tmp_path / "q").exists() and not (tmp_path / "cache").exists()
