"""A small split phantom cohort at 32 px and a synthetic dataset lent by its training subjects."""

import shutil

import pytest
from downstream_fixtures import rows_of, write_synthetic


@pytest.fixture(scope="session")
def split_dataset(split_phantom):
    return split_phantom(240, 32, test=0.25, val=0.2)


@pytest.fixture
def dataset_copy(split_dataset, tmp_path):
    """A copy a test may edit."""
    copy = tmp_path / "real"
    shutil.copytree(split_dataset, copy)
    return copy


@pytest.fixture(scope="session")
def synthetic_dataset(split_dataset, tmp_path_factory):
    """Female heart-failure (and some healthy) records lent by training subjects."""
    sources = rows_of(split_dataset, "train", "heart failure", "Female") * 3 + rows_of(split_dataset, "train",
                                                                                         "healthy", "Male")[:5]
    return write_synthetic(split_dataset, tmp_path_factory.mktemp("syn") / "synthetic", sources)
