"""Prompt effects: one mask drawn under two prompts by a tiny real generator, beside one phantom
subject drawn with two sets of real cues, all read by the trained judge."""

import json

import numpy as np
import pandas as pd
import pytest

from cardiofair.cli import main
from cardiofair.data.prepare import PrepareSettings, prepare_phantom
from cardiofair.data.records import load_dataset, read_manifest
from cardiofair.data.split import training_rows
from cardiofair.data.summary import attribute_table
from cardiofair.diffusion.presets import get_preset
from cardiofair.diffusion.sample import TrainedGenerator
from cardiofair.diffusion.train import TrainSettings, train
from cardiofair.generate import generate
from cardiofair.metrics.counterfactual import PairDrawing, draw_pairs, pair_readings, phantom_effects, read_pairs
from cardiofair.metrics.quality import PAIR_DRAWING_PARTS
from cardiofair.plan import plan_synthesis, read_plan, write_plan
from cardiofair.settings import GenerateSettings, PlanSettings
from cardiofair.threads import side_by_side


@pytest.fixture(scope="module")
def phantom64(tmp_path_factory):
    """New phantom subjects, prepared as a dataset: the judge never saw them."""
    root = tmp_path_factory.mktemp("counterfactual") / "phantom64"
    prepare_phantom(40, 9, root, settings=PrepareSettings(size=64), progress=False, workers=1)
    return root


def test_the_phantoms_own_sex_cues_move_the_judge_and_an_unchanged_pair_never_does(judged, phantom64):
    evaluators, _ = judged
    effects = phantom_effects(phantom64, read_manifest(phantom64), evaluators)
    sex = effects["sex"]
    assert sex["status"] == "ok" and sex["n_pairs"] == 40
    # The judge also reads sex from the heart, which a cue flip keeps: not every pair moves, but
    # those that do move towards the drawn cues (a move at random would follow both versions
    # about half the time).
    assert sex["moved"] > 0.1 and sex["follows_both"] >= 0.75 * sex["moved"] and sex["probability_shift"] > 0.05
    assert effects["bmi"]["status"] == "ok" and effects["bmi"]["values"] == ["normal", "obese"]
    for attribute in ("age", "diagnosis"):
        assert effects[attribute]["n_pairs"] == 0 and "lie in the heart" in effects[attribute]["status"]
    images = np.stack([record.image for record in load_dataset(phantom64)])
    unchanged = pair_readings(evaluators, "sex", ("Female", "Male"), images, images)
    assert unchanged["moved"] == 0.0 and unchanged["probability_shift"] == 0.0


def test_a_dataset_that_is_not_the_phantom_has_no_reference(judged, phantom64, tmp_path):
    evaluators, _ = judged
    (tmp_path / "prepare.json").write_text(json.dumps({"source": "ukbb"}))
    effects = phantom_effects(tmp_path, read_manifest(phantom64), evaluators)
    assert all(e["n_pairs"] == 0 and "not the phantom" in e["status"] for e in effects.values())


@pytest.fixture(scope="module")
def split16(split_phantom):
    return split_phantom(80, 16, test=0.25, val=0.15)


@pytest.fixture(scope="module")
def tiny(split16, tiny_trained):
    return tiny_trained(split16)


def test_same_prompt_and_seed_twice_never_moves_the_reading(judged, tiny, split16):
    evaluators, _ = judged
    generator = TrainedGenerator(tiny)
    records = [r for r in load_dataset(split16) if r.meta["split"] == "test"][:6]
    masks = np.stack([r.mask for r in records])
    prompts, seeds = [r.meta["prompt"] for r in records], list(range(6))
    first, second = generator.sample(masks, prompts, seeds), generator.sample(masks, prompts, seeds)
    assert pair_readings(evaluators, "sex", ("Female", "Male"), first, second)["moved"] == 0.0
    # Two prompts per attribute, one seed per mask, every other word the record's own.
    attributes = attribute_table(pd.DataFrame([r.meta for r in records]))
    effects = read_pairs(evaluators, draw_pairs(generator, evaluators.classes, masks, attributes, 3))
    assert {e["n_pairs"] for e in effects.values() if e["status"] == "ok"} == {6}


def test_pairs_drawn_in_parts_side_by_side_are_the_pairs_drawn_in_turn(judged, tiny, split16):
    """The quality stage draws its pairs in parts on whichever core its judges' training leaves
    free: parts running at once must not share a sampler's state."""
    evaluators, _ = judged
    generator = TrainedGenerator(tiny)
    records = [r for r in load_dataset(split16) if r.meta["split"] == "test"][:6]
    masks, attributes = np.stack([r.mask for r in records]), attribute_table(pd.DataFrame([r.meta for r in records]))
    in_turn, at_once = (PairDrawing(generator, evaluators.classes, masks, attributes, 3) for _ in range(2))
    side_by_side(lambda part: part(), in_turn.parts(3), workers=1)
    side_by_side(lambda part: part(), at_once.parts(3), workers=3)
    first, second = in_turn.result(), at_once.result()
    assert first.versions and first.versions.keys() == second.versions.keys()
    for attribute, versions in first.versions.items():
        assert all(np.array_equal(a, b) for a, b in zip(versions, second.versions[attribute]))


def test_evaluate_synthetic_writes_prompt_effects_and_refuses_a_model_that_learned_test_subjects(
        split16, tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CARDIOFAIR_CACHE", str(tmp_path / "cache"))
    plan = write_plan(plan_synthesis(training_rows(read_manifest(split16)), PlanSettings(
        strategy="prevalence", target_prevalence=0.4, attributes=("sex",), min_real_support=1, max_ratio_overall=0.3)),
        tmp_path / "plan.csv")
    # Drawn with 2 sampler steps where the model's own sampler takes 3: the prompt-effect pairs
    # must be drawn as the synthetic records were.
    synthetic = generate(tiny, split16, read_plan(plan), tmp_path / "synthetic",
                         GenerateSettings(batch_size=16, steps=2), progress=False)
    args = ["evaluate", "synthetic", "--real", str(split16), "--synthetic", str(synthetic), "--steps", "5",
            "--classifier-steps", "5", "--min-images", "5", "--counterfactual-pairs", "4"]
    samplers = []
    sample = TrainedGenerator.sample
    monkeypatch.setattr(TrainedGenerator, "sample", lambda self, *a, **k: samplers.append(a[3]) or sample(self, *a, **k))
    assert main([*args, "--model", str(tiny), "--out", str(tmp_path / "q")]) == 0
    assert TrainedGenerator(tiny).defaults.steps == 3 and [s.steps for s in samplers] == [2] * PAIR_DRAWING_PARTS
    monkeypatch.setattr(TrainedGenerator, "sample", sample)
    assert "prompt effect sex (share of pairs moved)" in capsys.readouterr().out
    effects = json.loads((tmp_path / "q" / "synthetic_quality.json").read_text())["prompt_effects"]
    assert effects["pairs"] == 4 and set(effects["attributes"]) == {"sex", "age", "bmi", "diagnosis"}
    sex = effects["attributes"]["sex"]
    assert sex["synthetic"]["status"] == "ok" and sex["synthetic"]["n_pairs"] == 4
    assert 0.0 <= sex["synthetic"]["moved"] <= 1.0 and sex["real_reference"]["n_pairs"] == 4
    assert "lie in the heart" in effects["attributes"]["diagnosis"]["real_reference"]["status"]
    # The pairs are drawn while the judges train, and on their own once the judges are cached;
    # cached judges read exactly as freshly trained ones.
    assert main([*args, "--model", str(tiny), "--out", str(tmp_path / "cached")]) == 0
    assert "evaluators: cached" in capsys.readouterr().out
    again = json.loads((tmp_path / "cached" / "synthetic_quality.json").read_text())["prompt_effects"]
    assert again == effects

    # A model trained before the split learned test subjects: its drawings would show them.
    unsplit = tmp_path / "unsplit"
    prepare_phantom(80, 0, unsplit, settings=PrepareSettings(size=16), progress=False, workers=1)
    leaky = train(unsplit, tmp_path / "leaky", TrainSettings.for_preset(get_preset("tiny"), max_steps=1),
                  progress_bar=False)
    assert main([*args, "--model", str(leaky), "--out", str(tmp_path / "q2")]) == 1
    assert "learned" in capsys.readouterr().err and not (tmp_path / "q2").exists()
