"""Tiny cohorts written in the real on-disk formats, for the real-cohort loader tests.

A heart is drawn with plain numpy geometry on a small grid: a disk of LV blood pool, a ring of
LV myocardium around it and a crescent of RV blood pool beside it, shrinking towards the apex.
Volumes carry an oblique affine with 1.8 mm pixels and 8 mm slices, as short-axis stacks do.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import nibabel as nib
import numpy as np
import pandas as pd

from cardiofair.data.case import ACDC_LABELS, CaseSource
from cardiofair.data.phantom import PhantomConfig
from cardiofair.data.phantom_export import write_phantom_ukbb
from cardiofair.diagnoses import ACDC_GROUPS
from cardiofair.errors import SubjectError

SHAPE = (48, 40)
SLICES = 5
SPACING = (1.8, 1.8, 8.0)
ED_CAVITY = 7.0
ES_CAVITY = 4.0


def heart_mask(cavity_radius: float = ED_CAVITY, shape: tuple[int, int] = SHAPE, slices: int = SLICES) -> np.ndarray:
    """(X, Y, Z) uint8 mask in cardiofair's order: 1 LV blood pool, 2 myocardium, 3 RV."""
    x, y = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    centre_x, centre_y = shape[0] / 2 + 3, shape[1] / 2
    mask = np.zeros((*shape, slices), dtype=np.uint8)
    for z in range(slices):
        scale = 1.0 - 0.1 * z  # the ventricles narrow towards the apex
        cavity, epicardium = cavity_radius * scale, (cavity_radius + 3.0) * scale
        lv = np.hypot(x - centre_x, y - centre_y)
        rv = np.hypot(x - (centre_x - 13 * scale), y - centre_y)
        plane = mask[:, :, z]
        plane[(rv <= 9.0 * scale) & (lv > epicardium)] = 3
        plane[(lv > cavity) & (lv <= epicardium)] = 2
        plane[lv <= cavity] = 1
    return mask


def heart_image(mask: np.ndarray, seed: int = 0, dtype: type = np.float32) -> np.ndarray:
    """A cine-like image of ``mask``: bright blood, darker myocardium, noisy background."""
    intensity = np.array([40.0, 220.0, 90.0, 200.0])[mask]
    noisy = intensity + np.random.default_rng(seed).normal(0.0, 5.0, mask.shape)
    return np.rint(noisy).astype(dtype) if np.issubdtype(dtype, np.integer) else noisy.astype(dtype)


def affine(spacing: Sequence[float] = SPACING, angle_deg: float = 30.0) -> np.ndarray:
    """An oblique scanner affine: voxel axes rotated about the long axis, offset origin."""
    angle = np.deg2rad(angle_deg)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0.0], [np.sin(angle), np.cos(angle), 0.0], [0.0, 0.0, 1.0]])
    matrix = np.eye(4)
    matrix[:3, :3] = rotation @ np.diag(spacing)
    matrix[:3, 3] = (-42.5, 61.0, 12.0)
    return matrix


def write_nifti(path: Path, data: np.ndarray, matrix: np.ndarray | None = None) -> Path:
    """Write ``data`` as .nii.gz with ``matrix`` (default: :func:`affine`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine() if matrix is None else matrix), str(path))
    return path


def write_frame(image_path: Path, mask_path: Path, cavity: float = ED_CAVITY, seed: int = 0,
                dtype: type = np.float32, labels: Mapping[int, int] | None = None) -> np.ndarray:
    """Write one 3D frame's image and mask; return the mask in cardiofair's order."""
    mask = heart_mask(cavity)
    on_disk = mask if labels is None else np.vectorize(labels.get)(mask).astype(np.uint8)
    write_nifti(image_path, heart_image(mask, seed, dtype))
    write_nifti(mask_path, on_disk)
    return mask


def cine(frames: int = 6, ed: int = 0, es: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A 4D (X, Y, Z, T) cine and its mask, annotated at ``ed`` and ``es`` only (ES cavity smaller)."""
    masks = np.zeros((*SHAPE, SLICES, frames), dtype=np.uint8)
    images = np.zeros((*SHAPE, SLICES, frames), dtype=np.float32)
    for t in range(frames):
        # The cavity shrinks from ED to ES: enough of a heart beat to tell the frames apart.
        phase = min(abs(t - ed) / max(abs(es - ed), 1), 1.0)
        frame_mask = heart_mask(ED_CAVITY - (ED_CAVITY - ES_CAVITY) * phase)
        images[..., t] = heart_image(frame_mask, seed + t)
        if t in (ed, es):
            masks[..., t] = frame_mask
    return images, masks


def truncate(path: Path) -> None:
    """Cut a .nii.gz in half, as an interrupted copy leaves it."""
    payload = path.read_bytes()
    path.write_bytes(payload[: len(payload) // 2])


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[object]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_acdc_patient(folder: Path, ed: int = 1, es: int = 4, group: str = "DCM", height: float = 184.0,
                       weight: float = 95.0, frames: int = 6, dtype: type = np.int16, info: str | None = None) -> None:
    """One ACDC patient folder: Info.cfg, the 4D cine, and the ED and ES frames with ACDC labels."""
    name = folder.name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "Info.cfg").write_text(info if info is not None else
                                     f"ED: {ed}\nES: {es}\nGroup: {group}\nHeight: {height}\nNbFrame: {frames}\n"
                                     f"Weight: {weight}\n")
    images, _ = cine(frames, ed - 1, es - 1)
    write_nifti(folder / f"{name}_4d.nii.gz", images.astype(dtype))
    for number, cavity in ((ed, ED_CAVITY), (es, ES_CAVITY)):
        write_frame(folder / f"{name}_frame{number:02d}.nii.gz", folder / f"{name}_frame{number:02d}_gt.nii.gz",
                    cavity, seed=number, dtype=dtype, labels=ACDC_LABELS)


# The 2021 release's information CSV (211230_M&Ms_Dataset_information_diagnosis_opendataset.csv).
MNMS_HEADER = ("External code", "VendorName", "Vendor", "Centre", "ED", "ES", "Pathology", "Sex", "Age", "Height",
               "Weight")
MNMS_ROWS = {
    "A0S9V9": ["A0S9V9", "Siemens", "A", 1, 0, 3, "HCM", "M", 45, 178.0, 80.0],
    "A1K2P5": ["A1K2P5", "Philips", "B", 2, 2, 5, "NOR", "F", 38, 165.0, 60.0],
    "C2L5P7": ["C2L5P7", "GE", "C", 4, 0, 3, "DCM", "F", 61, "", ""],
    "E3F5U2": ["E3F5U2", "Canon", "D", 5, 0, 3, "HHD", "M", 70, 170.0, 85.0],
}
MNMS_TABLE = "211230_M&Ms_Dataset_information_diagnosis_opendataset.csv"


def write_cine(folder: Path, code: str, ed: int, es: int, frames: int = 6, labelled: bool = True) -> None:
    """One M&Ms subject: ``folder/code/code_sa.nii.gz``, the 4D cine, and its masks (ED and ES frames only)."""
    images, masks = cine(frames, ed, es)
    write_nifti(folder / code / f"{code}_sa.nii.gz", images)
    if labelled:
        write_nifti(folder / code / f"{code}_sa_gt.nii.gz", masks)


def write_acdc_cohort(root: Path, per_weight: Sequence[tuple[float, int]] = ((70.0, 10), (95.0, 13))) -> Path:
    """An ACDC database (training/ and testing/ of patientNNN folders): for each of ACDC's five
    groups and each weight (height 175 cm: BMI 22.9 and 31.0 by default), that many patients.
    Every subgroup cell is large enough to reach the validation and test splits, and the BMI
    classes are unequal, so that a plan has something to fill."""
    number = 0
    for group in ACDC_GROUPS:
        for weight, count in per_weight:
            for _ in range(count):
                number += 1
                folder = root / ("testing" if number % 3 == 0 else "training") / f"patient{number:03d}"
                write_acdc_patient(folder, group=group, height=175.0, weight=weight)
    return root


def write_mnms_cohort(root: Path, per_sex: Sequence[tuple[str, int]] = (("F", 10), ("M", 13))) -> Path:
    """An M&Ms-1 release: ``root/Training/Labeled/<code>/`` cines and the information CSV, with
    that many subjects of each sex per pathology (unequal, so that a plan has something to fill),
    spread over four vendors and centres."""
    vendors = (("Siemens", "A", 1), ("Philips", "B", 2), ("GE", "C", 3), ("Canon", "D", 5))
    rows = []
    for pathology in ("NOR", "DCM", "HCM", "HHD"):
        for sex, count in per_sex:
            for _ in range(count):
                code = f"M{len(rows):05d}"
                write_cine(root / "Training" / "Labeled", code, 0, 3)
                name, vendor, centre = vendors[len(rows) % len(vendors)]
                rows.append([code, name, vendor, centre, 0, 3, pathology, sex, 63, 172.0, 80.0])
    write_csv(root / MNMS_TABLE, MNMS_HEADER, rows)
    return root


def write_mnms_copy(root: Path, per_vendor: int = 3, spacing: Sequence[float] = (1.0, 1.0, 1.0),
                    cavity: float = 10.0) -> Path:
    """The public M&Ms copy's layout under ``root/Different_Vendor``: vendor folders ``A`` and
    ``B`` of ``ED_<code>_sa.nii.gz`` and ``ES_<code>_sa.nii.gz``, masks in ``LABEL_A`` and
    ``LABEL_B``, ``TRAIN_A`` repeating ``A``, and beside it a per-slice metadata table (External
    code, Vendor, Centre, ...) as MnMsCardiac's ``train.csv``. Headers carry ``spacing`` (the
    copy's are 1 x 1 x 1 mm); the LV cavity is ``cavity`` pixels in radius at ED."""
    rows = []
    for vendor, centre in (("A", 1), ("B", 2)):
        for number in range(per_vendor):
            code = f"{vendor}{number:02d}X{number}Y"
            for folder in ((vendor, f"LABEL_{vendor}"), ("TRAIN_A", "TRAIN_LABEL_A"))[: 1 + (vendor == "A")]:
                images, labels = root / "Different_Vendor" / folder[0], root / "Different_Vendor" / folder[1]
                for frame, radius in (("ED", cavity), ("ES", cavity - 3.0)):
                    mask = heart_mask(radius)
                    write_nifti(images / f"{frame}_{code}_sa.nii.gz", heart_image(mask, number), affine(spacing, 0.0))
                    write_nifti(labels / f"{frame}_{code}_sa_gt.nii.gz", mask, affine(spacing, 0.0))
            rows += [[code, vendor, centre, True, frame, 0, z] for frame in ("ED", "ES") for z in range(SLICES)]
    write_csv(root / "train.csv", ("External code", "Vendor", "Centre", "Labeled", "Type", "Phase", "Slice"), rows)
    return root


def write_ukbb_cohort(root: Path, n: int, columns: Mapping[str, str]) -> Path:
    """``n`` phantom subjects in UK Biobank's layout (``root/<eid>/sa_ED.nii.gz`` ...) with a
    metadata CSV whose columns are named as ``columns`` maps cardiofair's fields (a study file's
    ``prepare.columns``); returns the CSV. Every subject is in his or her 60s with overweight BMI
    and heart failure is common, so that a small cohort still fills every split."""
    config = PhantomConfig(age_min=60.0, age_max=69.9, bmi_median=27.0, bmi_log_sd=0.01,
                           hf_reference_prevalence=0.5, hf_odds_female=1.0)
    exported = pd.read_csv(write_phantom_ukbb(root, n, seed=3, config=config, shape=(80, 88), n_slices=6), dtype=str)
    table = pd.DataFrame({columns["subject_id"]: exported["eid"], columns["sex"]: exported["sex"],
                          columns["age_years"]: exported["age"], columns["height_cm"]: exported["height"],
                          columns["weight_kg"]: exported["weight"], columns["icd10"]: exported["icd10"],
                          columns["bmi"]: (exported["weight"].astype(float)
                                           / (exported["height"].astype(float) / 100) ** 2).round(1)})
    path = root / "participants.csv"
    table.to_csv(path, index=False)
    (root / "metadata.csv").unlink()
    return path


def load_all(sources: Iterable[CaseSource]) -> tuple[dict, dict[str, SubjectError]]:
    """Load every source: (subject id -> Case, subject id -> SubjectError)."""
    cases, errors = {}, {}
    for source in sources:
        try:
            cases[source.subject_id] = source.load()
        except SubjectError as error:
            errors[source.subject_id] = error
    return cases, errors
