import numpy as np
import pandas as pd
import pytest

from cardiofair.data.case import Case
from cardiofair.data.phantom import PhantomConfig, phantom_subject, phantom_volume
from cardiofair.data.prepare import (
    PrepareSettings,
    normalise_intensity,
    prepare_case,
    prepare_phantom,
    run_prepare,
    select_slices,
)
from cardiofair.data.records import read_manifest
from cardiofair.errors import SubjectError


def scanner_case(rotate_deg=0.0, seed=0, subject_id="case-1"):
    """A phantom stack on an anisotropic grid: slices 1..6 of 8 show the heart."""
    meta, images, masks = phantom_volume(seed, 0, shape=(90, 110), spacing_mm=(1.6, 2.0, 8.0),
                                         centre_mm=(20.0, -30.0), rotate_deg=rotate_deg)
    files = {"ED": "ed.nii.gz", "ES": "es.nii.gz", "ED_mask": "ed_gt.nii.gz", "ES_mask": "es_gt.nii.gz"}
    return Case(subject_id, "test", images, masks, (1.6, 2.0, 8.0), meta, files)


def test_mid_ventricular_slice_and_neighbours():
    case = scanner_case()
    assert select_slices(case, 1) == [4]  # slices 1..6 show the LV; the middle of them
    assert select_slices(case, 3) == [3, 4, 5]
    assert select_slices(case, 10) == [1, 2, 3, 4, 5, 6]
    assert (case.masks["ED"][:, :, 4] == 1).sum() > (case.masks["ED"][:, :, 6] == 1).sum()  # apex is smaller


def test_crop_is_centred_on_the_lv_at_the_requested_physical_scale():
    case = scanner_case()
    settings = PrepareSettings(size=64, fov_mm=150.0)
    (record,) = prepare_case(case, settings)
    assert record.image.shape == (2, 64, 64) and record.mask.shape == (2, 64, 64)
    assert 0.0 <= record.image.min() and record.image.max() <= 1.0
    lv = np.argwhere(np.isin(record.mask[0], (1, 2))).mean(axis=0)
    assert np.allclose(lv, (31.5, 31.5), atol=1.0)
    # Nearest-neighbour masks: areas in mm^2 survive resampling from the anisotropic grid.
    z = select_slices(case, 1)[0]
    source_mm2 = (case.masks["ED"][:, :, z] == 1).sum() * 1.6 * 2.0
    prepared_mm2 = (record.mask[0] == 1).sum() * (150.0 / 64) ** 2
    assert abs(prepared_mm2 - source_mm2) / source_mm2 < 0.05
    assert set(np.unique(record.mask)) == {0, 1, 2, 3}
    assert record.meta["prompt"].endswith(record.meta["diagnosis"])
    assert record.meta["pixel_spacing_mm"] == pytest.approx(150.0 / 64)


def test_rv_left_alignment_undoes_a_rotation():
    settings = PrepareSettings(size=64, align="rv-left")
    for degrees in (0.0, 90.0, 200.0):
        (record,) = prepare_case(scanner_case(rotate_deg=degrees), settings)
        lv = np.argwhere(record.mask[0] == 1).mean(axis=0)
        rv = np.argwhere(record.mask[0] == 3).mean(axis=0)
        assert rv[1] < lv[1] - 5 and abs(rv[0] - lv[0]) < 3


def test_empty_lv_mask_is_a_subject_error():
    case = scanner_case()
    case.masks["ES"][case.masks["ES"] == 1] = 2
    with pytest.raises(SubjectError, match="LV mask is empty") as error:
        prepare_case(case, PrepareSettings())
    assert error.value.file == "es_gt.nii.gz"


def test_constant_image_is_a_subject_error():
    case = scanner_case()
    for f in ("ED", "ES"):
        case.images[f][:] = 7.0
    with pytest.raises(SubjectError, match="constant intensity"):
        prepare_case(case, PrepareSettings())


def test_normalisation_is_robust_to_outliers():
    image = np.random.default_rng(0).random((2, 32, 32))
    image[0, 0, 0] = 1e6
    out = normalise_intensity(image)
    assert out.max() == 1.0 and np.median(out) == pytest.approx(0.5, abs=0.05)


class _Good:
    def __init__(self, seed):
        self.seed = seed

    def __call__(self):
        # A task returns the subject's records and the warnings about it.
        return prepare_case(scanner_case(seed=self.seed, subject_id=f"good-{self.seed}"), PrepareSettings()), []


class _Bad:
    def __call__(self):
        raise SubjectError("bad-1", "bad-1/sa_ES.nii.gz", "file is missing")


def test_bad_subjects_are_excluded_and_good_ones_kept(tmp_path):
    result = run_prepare([_Good(1), _Bad(), _Good(2)], tmp_path / "d", {"source": "test"}, progress=False)
    assert result.n_subjects == 2 and len(result.excluded) == 1
    manifest = read_manifest(tmp_path / "d")
    assert list(manifest["subject_id"]) == ["good-1", "good-2"]
    excluded = pd.read_csv(tmp_path / "d" / "excluded.csv")
    assert excluded.to_dict("records") == [{"subject_id": "bad-1", "file": "bad-1/sa_ES.nii.gz",
                                            "reason": "file is missing"}]


def test_strict_stops_at_the_first_problem_and_writes_nothing(tmp_path):
    with pytest.raises(SubjectError, match="bad-1"):
        run_prepare([_Good(1), _Bad(), _Good(2)], tmp_path / "d", {}, strict=True, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_phantom_dataset_is_identical_in_parallel_and_serial(tmp_path):
    prepare_phantom(40, 7, tmp_path / "serial", workers=1, progress=False)
    prepare_phantom(40, 7, tmp_path / "parallel", workers=2, progress=False)
    for name in ("manifest.csv", "prepare.json", "images/phantom-000013.nii.gz", "masks/phantom-000013.nii.gz"):
        assert (tmp_path / "serial" / name).read_bytes() == (tmp_path / "parallel" / name).read_bytes()


def test_phantom_neighbouring_slices(tmp_path):
    result = prepare_phantom(3, 0, tmp_path / "d", settings=PrepareSettings(slices_per_subject=3), progress=False)
    manifest = read_manifest(tmp_path / "d")
    assert result.n_records == 9 and manifest["subject_id"].nunique() == 3
    assert sorted(manifest.loc[manifest.subject_id == "phantom-000000", "slice_index"]) == [-1, 0, 1]
    # Towards the apex the cavity shrinks.
    first = [r for r in phantom_subject(0, 0, PhantomConfig(), (-1.0, 1.0))]
    assert (first[0].mask[0] == 1).sum() > (first[1].mask[0] == 1).sum()
