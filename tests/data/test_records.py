import numpy as np
import pytest

from cardiofair.data.records import (
    MANIFEST_COLUMNS,
    DatasetWriter,
    Record,
    load_dataset,
    read_manifest,
    read_pair_nifti,
)
from cardiofair.errors import OutputExistsError, SubjectError


def _record(rid="s1", spacing=1.5):
    rng = np.random.default_rng(0)
    image = rng.random((2, 12, 10), dtype=np.float32)
    mask = rng.integers(0, 4, (2, 12, 10)).astype(np.uint8)
    return Record(image, mask, {"record_id": rid, "subject_id": rid, "dataset": "test", "sex": "Female",
                                "diagnosis": "healthy", "prompt": "Female, healthy", "pixel_spacing_mm": spacing})


def test_record_shape_checks():
    with pytest.raises(ValueError, match=r"\(2, H, W\)"):
        Record(np.zeros((3, 4, 4)), np.zeros((3, 4, 4)))
    with pytest.raises(ValueError, match="mask shape"):
        Record(np.zeros((2, 4, 4)), np.zeros((2, 4, 5)))


def test_dataset_round_trip(tmp_path):
    record = _record()
    with DatasetWriter(tmp_path / "d") as writer:
        writer.add(record)
        writer.exclude(SubjectError("s2", "s2/sa_ED.nii.gz", "file is missing"))
        writer.finish({"source": "test"})
    manifest = read_manifest(tmp_path / "d")
    assert list(manifest.columns[: len(MANIFEST_COLUMNS)]) == list(MANIFEST_COLUMNS)
    loaded = load_dataset(tmp_path / "d")[0]
    assert np.array_equal(loaded.image, record.image) and np.array_equal(loaded.mask, record.mask)
    assert loaded.meta["pixel_spacing_mm"] == pytest.approx(1.5)
    _, spacing, description = read_pair_nifti(tmp_path / "d" / manifest.loc[0, "image_path"])
    assert spacing == pytest.approx(1.5) and "ED,ES" in description
    excluded = (tmp_path / "d" / "excluded.csv").read_text()
    assert "s2,s2/sa_ED.nii.gz,file is missing" in excluded
    assert (tmp_path / "d" / manifest.loc[0, "preview_path"]).stat().st_size > 0


def test_existing_output_needs_overwrite(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(OutputExistsError, match="--overwrite"):
        DatasetWriter(tmp_path / "d")
    with DatasetWriter(tmp_path / "d", overwrite=True) as writer:
        writer.add(_record())
        writer.finish({})
    assert len(read_manifest(tmp_path / "d")) == 1


def test_a_crash_leaves_nothing_half_written(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "keep.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with DatasetWriter(tmp_path / "d", overwrite=True) as writer:
            writer.add(_record())
            raise RuntimeError("killed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]
    assert (tmp_path / "d" / "keep.txt").read_text() == "old"


def test_duplicate_record_ids_are_refused(tmp_path):
    with pytest.raises(ValueError, match="duplicate"):
        with DatasetWriter(tmp_path / "d") as writer:
            writer.add(_record("a"))
            writer.add(_record("a"))
            writer.finish({})
    assert not (tmp_path / "d").exists()


def test_not_a_dataset(tmp_path):
    with pytest.raises(FileNotFoundError, match="cardiofair prepare"):
        read_manifest(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a synthetic dataset.*run `cardiofair generate`"):
        read_manifest(tmp_path, made_by="generate")
