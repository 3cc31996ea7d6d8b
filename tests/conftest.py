"""Fixtures the whole suite shares."""

import pytest

from cardiofair.data.prepare import prepare_phantom
from cardiofair.data.records import read_manifest
from cardiofair.data.split import assign_splits, write_splits
from cardiofair.settings import PrepareSettings


@pytest.fixture(scope="session")
def split_phantom(tmp_path_factory):
    """``make(n, size, test, val)``: a prepared phantom cohort of ``n`` subjects (seed 0) at
    ``size`` px, split by subject (seed 0); each kind is made once per session, so a test that
    edits one copies it first."""
    made = {}

    def make(n, size, test, val):
        key = (n, size, test, val)
        if key not in made:
            root = tmp_path_factory.mktemp("phantom") / f"phantom{n}-{size}px"
            prepare_phantom(n, 0, root, settings=PrepareSettings(size=size), progress=False, workers=1)
            write_splits(root, assign_splits(read_manifest(root), test=test, val=val, seed=0))
            made[key] = root
        return made[key]

    return make
