"""ACDC, the Automated Cardiac Diagnosis Challenge (Bernard et al., IEEE TMI 2018).

Each ``patientNNN`` folder holds ``Info.cfg`` (ED and ES frame numbers, 1-based, the diagnostic
group, height and weight) and one image and mask per annotated frame,
``patientNNN_frameXX.nii.gz`` and ``patientNNN_frameXX_gt.nii.gz``. Masks store 1 RV, 2
myocardium, 3 LV; they are remapped to cardiofair's order on load. ACDC records neither sex nor
age, so those stay unknown.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from cardiofair.data.case import ACDC_LABELS, Case, CaseSource
from cardiofair.data.cohort import existing_root, frame_number, load_subject, no_subjects, split_name, unique_subjects
from cardiofair.data.records import FRAMES
from cardiofair.diagnoses import acdc_diagnosis
from cardiofair.errors import SubjectError

DATASET = "acdc"
PATIENT = re.compile(r"patient\d+")
# The official archive nests patients as database/{training,testing}/patientNNN; the root may
# be any folder down to the patients' own parent.
SEARCH_DEPTHS = ("", "*/", "*/*/", "*/*/*/")
LAYOUT = "patientNNN/Info.cfg folders in ROOT, ROOT/training, ROOT/testing or ROOT/database/training"


def discover(root: str | os.PathLike, required: tuple[str, ...] = ("diagnosis",)) -> list[CaseSource]:
    """Every ``patientNNN`` folder under ``root``, sorted by patient."""
    root = existing_root(root, "ACDC")
    folders = (path for depth in SEARCH_DEPTHS for path in sorted(root.glob(f"{depth}patient*"))
               if path.is_dir() and PATIENT.fullmatch(path.name))
    patients = unique_subjects(((folder.name, folder) for folder in folders), "ACDC")
    if not patients:
        raise no_subjects(root, "ACDC", LAYOUT)
    return [
        CaseSource(patient, load_patient, {"subject_id": patient, "folder": str(folder),
                                           "split": split_name(folder, root), "required": required})
        for patient, folder in patients.items()
    ]


def load_patient(subject_id: str, folder: str, split: str | None, required: tuple[str, ...] = ("diagnosis",)) -> Case:
    """Read one patient's Info.cfg, then its ED and ES frames."""
    folder_path = Path(folder)
    info_path = folder_path / "Info.cfg"
    info = read_info(subject_id, info_path)
    try:
        count = frame_number(info["NbFrame"], "NbFrame", first=1) if "NbFrame" in info else None
        numbers = {name: frame_number(info[name], name, first=1) for name in FRAMES if name in info}
    except ValueError as error:
        raise SubjectError(subject_id, info_path, f"Info.cfg: {error}") from None
    frames = {}
    for name in FRAMES:
        if name not in numbers:
            raise SubjectError(subject_id, info_path, f"Info.cfg has no {name} line")
        if count is not None and numbers[name] > count:
            raise SubjectError(subject_id, info_path, f"Info.cfg: {name} frame {numbers[name]} is beyond NbFrame {count}")
        stem = folder_path / f"{subject_id}_frame{numbers[name]:02d}"
        frames[name] = (f"{stem}.nii.gz", f"{stem}_gt.nii.gz", None)
    meta = {"height_cm": info.get("Height"), "weight_kg": info.get("Weight"), "diagnosis": info.get("Group"),
            "source_split": split}
    return load_subject(subject_id, DATASET, frames, ACDC_LABELS, meta, str(info_path), required, acdc_diagnosis)


def read_info(subject_id: str, path: Path) -> dict[str, str]:
    """The ``key: value`` lines of an ACDC ``Info.cfg``."""
    try:
        text = path.read_text()
    except OSError as error:
        reason = "Info.cfg is missing" if not path.exists() else f"cannot read Info.cfg: {error}"
        raise SubjectError(subject_id, path, reason) from None
    info = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        key, colon, value = line.partition(":")
        if not colon:
            raise SubjectError(subject_id, path, f"Info.cfg line {number} is not 'key: value': {line.strip()!r}")
        info[key.strip()] = value.strip()
    return info
