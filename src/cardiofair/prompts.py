"""Patient metadata <-> text prompt, and the subgroup cells every later stage speaks in.

Pure Python: no torch, no numpy. The default grammar is the paper's
``"{Sex}, age in {decade}s, {bmi_class} BMI, {diagnosis}"``; an unknown attribute is left out
of the prompt (never invented), and every prompt parses back into its binned attributes so that
evaluation can check whether a synthetic image carries what it was asked for.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Mapping

from cardiofair.errors import InputError, SettingsError

SEXES = ("Female", "Male")
# WHO adult BMI classes: underweight < 18.5, normal < 25, overweight < 30, obese >= 30.
BMI_CLASSES = ("underweight", "normal", "overweight", "obese")
BMI_THRESHOLDS = (18.5, 25.0, 30.0)
ATTRIBUTES = ("sex", "age", "bmi", "diagnosis")
# How a cell spells an attribute a record does not have: counted as a group of its own, never guessed.
UNKNOWN = "unknown"



class PromptError(InputError):
    """A prompt or a metadata value outside the prompt grammar."""

def is_missing(value: Any) -> bool:
    """True for None, NaN and the empty or NA-like strings of CSV exports."""
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    return isinstance(value, str) and value.strip().lower() in {"", "na", "nan", "none", "null"}


def bmi_class(bmi: float | None) -> str | None:
    """WHO class of a BMI value, or None when unknown."""
    if is_missing(bmi):
        return None
    bmi = float(bmi)
    for name, upper in zip(BMI_CLASSES, BMI_THRESHOLDS):
        if bmi < upper:
            return name
    return BMI_CLASSES[-1]


def age_bin(age_years: float | None, width: int = 10) -> str | None:
    """Age bin label: ``"60s"`` for 10-year bins, ``"60-64"`` for other widths; None if unknown."""
    if is_missing(age_years):
        return None
    lower = int(float(age_years) // width * width)
    return f"{lower}s" if width == 10 else f"{lower}-{lower + width - 1}"


def normalise_sex(value: Any, numeric_codes: bool = False) -> str | None:
    """Map the common sex codes to ``Female``/``Male``; None if missing.

    Accepts Female/Male, F/M and woman/man; with ``numeric_codes``, also UK Biobank's
    data-field 31 coding (0 female, 1 male). Numbers are refused otherwise, because cohorts
    disagree on them (1/2 elsewhere) and a wrong guess would silently relabel half the cohort.
    Anything else raises :class:`PromptError`.
    """
    if is_missing(value):
        return None
    text = str(value).strip().lower()
    female, male = {"female", "f", "woman", "w"}, {"male", "m", "man"}
    if numeric_codes:
        female, male = female | {"0", "0.0"}, male | {"1", "1.0"}
    if text in female:
        return "Female"
    if text in male:
        return "Male"
    expected = "Female/Male, F/M" + (" or 0/1" if numeric_codes else "")
    raise PromptError(f"unknown sex code {value!r} (expected {expected})")


@dataclass(frozen=True)
class PromptSchema:
    """Which attributes enter the prompt, in which order, and how they are binned."""

    attributes: tuple[str, ...] = ATTRIBUTES
    age_bin_width: int = 10

    def __post_init__(self) -> None:
        unknown = [a for a in self.attributes if a not in ATTRIBUTES]
        if unknown:
            raise SettingsError("attributes", f"has unknown prompt attribute(s) {unknown}; choose from "
                                f"{list(ATTRIBUTES)}")
        if self.age_bin_width < 1:
            raise SettingsError("age_bin_width", "must be a positive number of years")

    @property
    def sensitive_attributes(self) -> tuple[str, ...]:
        """The prompt attributes other than the diagnosis."""
        return tuple(a for a in self.attributes if a != "diagnosis")

    def to_dict(self) -> dict[str, Any]:
        return {"attributes": list(self.attributes), "age_bin_width": self.age_bin_width}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "PromptSchema":
        return cls(attributes=tuple(data["attributes"]), age_bin_width=int(data["age_bin_width"]))


DEFAULT_SCHEMA = PromptSchema()


def binned_attributes(meta: Mapping[str, Any], schema: PromptSchema = DEFAULT_SCHEMA) -> dict[str, str | None]:
    """The binned value of every schema attribute (None where unknown).

    ``meta`` uses record column names: sex, age_years, bmi, diagnosis.
    """
    values: dict[str, str | None] = {}
    for attribute in schema.attributes:
        if attribute == "sex":
            values["sex"] = normalise_sex(meta.get("sex"))
        elif attribute == "age":
            values["age"] = age_bin(meta.get("age_years"), schema.age_bin_width)
        elif attribute == "bmi":
            values["bmi"] = bmi_class(meta.get("bmi"))
        else:
            diagnosis = meta.get("diagnosis")
            values["diagnosis"] = None if is_missing(diagnosis) else str(diagnosis).strip()
    return values


def _phrase(attribute: str, value: str) -> str:
    if attribute == "sex":
        return value
    if attribute == "age":
        return f"age in {value}" if value.endswith("s") else f"age {value}"
    if attribute == "bmi":
        return f"{value} BMI"
    return value


def build_prompt(meta: Mapping[str, Any], schema: PromptSchema = DEFAULT_SCHEMA) -> str:
    """The text prompt of one record, e.g. ``"Female, age in 60s, normal BMI, heart failure"``."""
    values = binned_attributes(meta, schema)
    if values.get("diagnosis") and "," in values["diagnosis"]:
        raise PromptError(f"diagnosis {values['diagnosis']!r} contains a comma, which the prompt grammar reserves")
    return ", ".join(_phrase(a, v) for a, v in values.items() if v is not None)


def prompt_phrases(prompt: str) -> list[str]:
    """The attribute phrases of a prompt, in order (``[]`` for the empty, unconditional one)."""
    return [p.strip() for p in prompt.split(",") if p.strip()]


def prompt_from_attributes(values: Mapping[str, str | None], schema: PromptSchema = DEFAULT_SCHEMA) -> str:
    """The prompt of already-binned values (keys as :func:`binned_attributes` returns them).

    Attributes that are None or absent are left out. The planner asks for cells, not records,
    so it holds binned values only; the prompt is checked to parse back to exactly ``values``,
    because a prompt the evaluation cannot read would make the synthetic records unverifiable.
    """
    unknown = [a for a in values if a not in schema.attributes]
    if unknown:
        raise PromptError(f"attribute(s) {unknown} are not in the prompt schema {list(schema.attributes)}")
    prompt = ", ".join(_phrase(a, values[a]) for a in schema.attributes if values.get(a) is not None)
    expected = {a: values.get(a) for a in schema.attributes}
    try:
        parsed = parse_prompt(prompt, schema)
    except ValueError as error:
        raise PromptError(f"values {dict(values)} make the prompt {prompt!r}, which does not parse back: {error}") from None
    if parsed != expected:
        raise PromptError(f"values {dict(values)} make the prompt {prompt!r}, which parses back as {parsed}")
    return prompt


_AGE_PATTERN = re.compile(r"^age (?:in (\d+)s|(\d+)-(\d+))$")
_BMI_PATTERN = re.compile(r"^(" + "|".join(BMI_CLASSES) + r") BMI$")


def parse_prompt(prompt: str, schema: PromptSchema = DEFAULT_SCHEMA) -> dict[str, str | None]:
    """The inverse of :func:`build_prompt`: binned attributes, None for those left out.

    Raises :class:`PromptError` on a phrase that fits no attribute of the schema, or on an attribute
    given twice, so that a hand-written prompt with a typo is reported rather than half-read.
    """
    values: dict[str, str | None] = {a: None for a in schema.attributes}
    for phrase in prompt_phrases(prompt):
        attribute, value = _parse_phrase(phrase, schema)
        if values[attribute] is not None:
            raise PromptError(f"prompt {prompt!r} gives {attribute} twice")
        values[attribute] = value
    return values


def without_attribute(prompt: str, attribute: str, schema: PromptSchema = DEFAULT_SCHEMA) -> str:
    """The prompt with ``attribute``'s phrase left out (unchanged where it has none)."""
    return ", ".join(p for p in prompt_phrases(prompt) if _parse_phrase(p, schema)[0] != attribute)


def _parse_phrase(phrase: str, schema: PromptSchema) -> tuple[str, str]:
    attributes = schema.attributes
    if "sex" in attributes and phrase in SEXES:
        return "sex", phrase
    age = _AGE_PATTERN.match(phrase)
    if "age" in attributes and age:
        value = f"{age.group(1)}s" if age.group(1) else f"{age.group(2)}-{age.group(3)}"
        return "age", value
    bmi = _BMI_PATTERN.match(phrase)
    if "bmi" in attributes and bmi:
        return "bmi", bmi.group(1)
    if "diagnosis" in attributes and not (phrase in SEXES or age or bmi):
        return "diagnosis", phrase
    raise PromptError(f"prompt phrase {phrase!r} matches no attribute of {list(attributes)}")


def subgroup_cell(meta: Mapping[str, Any], schema: PromptSchema = DEFAULT_SCHEMA) -> tuple[str, ...]:
    """The subgroup cell of a record: its binned sensitive attributes then its diagnosis.

    Unknown values are spelled :data:`UNKNOWN` so that such records are counted, not dropped.
    """
    values = binned_attributes(meta, schema)
    ordered = [a for a in schema.attributes if a != "diagnosis"] + (["diagnosis"] if "diagnosis" in values else [])
    return tuple(values[a] or UNKNOWN for a in ordered)


def cell_columns(schema: PromptSchema = DEFAULT_SCHEMA) -> tuple[str, ...]:
    """Column names matching :func:`subgroup_cell`'s tuple."""
    ordered = [a for a in schema.attributes if a != "diagnosis"]
    return tuple(ordered + (["diagnosis"] if "diagnosis" in schema.attributes else []))
