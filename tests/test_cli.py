import subprocess
import sys

from cardiofair.cli import main


def test_prepare_and_summary_show_the_imbalance(tmp_path, capsys):
    out = tmp_path / "d"
    assert main(["prepare", "--source", "phantom", "--n", "120", "--seed", "0", "--out", str(out), "--quiet"]) == 0
    assert "wrote 120 records from 120 subjects" in capsys.readouterr().out
    assert main(["summary", str(out)]) == 0
    text = capsys.readouterr().out
    assert "120 records from 120 subjects (phantom)" in text
    assert "% heart failure" in text and "Records per subgroup cell" in text
    assert "Female 60s" in text.replace("  ", " ")


def test_same_seed_gives_byte_identical_manifests(tmp_path):
    for name in ("a", "b"):
        assert main(["prepare", "--source", "phantom", "--n", "50", "--seed", "3", "--out", str(tmp_path / name),
                     "--quiet", "--workers", "2"]) == 0
    assert (tmp_path / "a" / "manifest.csv").read_bytes() == (tmp_path / "b" / "manifest.csv").read_bytes()
    main(["prepare", "--source", "phantom", "--n", "50", "--seed", "4", "--out", str(tmp_path / "c"), "--quiet"])
    assert (tmp_path / "a" / "manifest.csv").read_bytes() != (tmp_path / "c" / "manifest.csv").read_bytes()


def test_existing_output_is_kept_without_overwrite(tmp_path, capsys):
    out = tmp_path / "d"
    out.mkdir()
    assert main(["prepare", "--source", "phantom", "--n", "5", "--out", str(out), "--quiet"]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert list(out.iterdir()) == []
    assert main(["prepare", "--source", "phantom", "--n", "5", "--out", str(out), "--quiet", "--overwrite"]) == 0


def test_phantom_config_file_sets_the_imbalance(tmp_path, capsys):
    config = tmp_path / "phantom.yaml"
    config.write_text("hf_odds_female: 1.0\nfemale_fraction: 0.3\n")
    out = tmp_path / "d"
    assert main(["prepare", "--source", "phantom", "--n", "10", "--out", str(out), "--quiet",
                 "--phantom-config", str(config)]) == 0
    assert '"hf_odds_female": 1.0' in (out / "prepare.json").read_text()
    config.write_text("hf_odds_sex: 1.0\n")
    assert main(["prepare", "--source", "phantom", "--n", "10", "--out", str(tmp_path / "e"), "--quiet",
                 "--phantom-config", str(config)]) == 1
    assert "hf_odds_sex" in capsys.readouterr().err


def test_real_source_needs_a_root(tmp_path, capsys):
    assert main(["prepare", "--source", "acdc", "--out", str(tmp_path / "d")]) == 1
    assert "--root" in capsys.readouterr().err


def test_every_command_prints_its_help():
    """A literal % in an option's help ("95% interval") once broke `cardiofair quality --help`."""
    import argparse

    from cardiofair.cli import build_parser

    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    for name, parser in commands.items():
        text = parser.format_help()
        assert "usage: cardiofair " + name in text and "--help" in text
    assert "95% interval" in commands["quality"].format_help()


def test_module_entry_point():
    result = subprocess.run([sys.executable, "-m", "cardiofair", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "prepare" in result.stdout and "summary" in result.stdout


def test_an_unexpected_error_inside_a_stage_prints_its_traceback_and_asks_for_a_report(tmp_path, capsys,
                                                                                        monkeypatch):
    import cardiofair.stages.plan

    out = tmp_path / "d"
    assert main(["prepare", "--source", "phantom", "--n", "30", "--out", str(out), "--quiet"]) == 0
    assert main(["split", str(out)]) == 0
    capsys.readouterr()

    def broken(manifest, settings):
        # Stands in for a bug in planning: an error cardiofair does not expect from the user's input.
        return {}["no such cell"]

    # The stage calls the planner by the name it imported.
    monkeypatch.setattr(cardiofair.stages.plan, "plan_synthesis", broken)
    assert main(["plan", str(out), "--out", str(tmp_path / "plan.csv")]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "KeyError: 'no such cell'" in err
    assert "this is a bug in cardiofair" in err and "please report it" in err
    # A user's mistake stays one line, without a traceback.
    assert main(["plan", str(out), "--out", str(tmp_path / "plan.csv"), "--strategy", "prevalence"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1 and "--target-prevalence must be in (0, 1)" in err
