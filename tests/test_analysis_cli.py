"""``rdmldg analyze`` on a tiny MTCT/SARR-shaped run: every figure is a PNG of the stated size and its
data file holds the plotted numbers, recomputed here from the per-item numbers."""

import csv
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from helpers.analysis import dataset_dir, run_dir
from helpers.mtct import tiny_model_dir
from rdmldg_hf.analysis import top_reductions
from rdmldg_hf.analysis.entropy import TypeChange
from rdmldg_hf.analysis.plots import DPI, PANEL, TALL
from rdmldg_hf.cli import main

COMMON = ["--max-images", "2", "--max-new-tokens", "16", "--batch-size", "8"]


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _png_size(path):
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def _manifest(out, capsys):
    manifest = json.loads((out / "manifest.json").read_text())
    printed = capsys.readouterr().out
    for figure in manifest["figures"]:
        assert figure["png"] in printed
        assert _png_size(figure["png"]) == (figure["width_px"], figure["height_px"])
        assert Path(figure["data"]).is_file()
    for path in manifest["files"]:
        assert Path(path).is_file() and path in printed
    return manifest


def _size(inches):
    return tuple(round(v * DPI) for v in inches)


def _assert_histogram(figure_csv, values_by_series):
    rows = _rows(figure_csv)
    for series, values in values_by_series.items():
        mine = [r for r in rows if r["series"] == series]
        edges = [float(r["bin_left"]) for r in mine] + [float(mine[-1]["bin_right"])]
        counts, _ = np.histogram(np.clip(values, 0, 1), bins=np.asarray(edges))
        assert [int(r["count"]) for r in mine] == counts.tolist(), series
        assert int(mine[0]["n"]) == len(values)
        assert float(mine[0]["mean"]) == pytest.approx(float(np.mean(values)))


@pytest.fixture(scope="module")
def run():
    return run_dir()


def test_class_probs(run, tmp_path, capsys):
    out = tmp_path / "class-probs"
    argv = [
        "analyze",
        "class-probs",
        "--adapter",
        str(run / "stages/mtct/final"),
        str(run),
        "--with-base",
        "--dataset",
        str(dataset_dir()),
        "--out",
        str(out),
        *COMMON,
    ]
    assert main(argv) == 0
    manifest = _manifest(out, capsys)
    rows = _rows(out / "class_probs.csv")
    models = ["base", "mtct", run.name]
    assert sorted({r["model"] for r in rows}) == sorted(models)
    # The run held out rot30: 2 target images; source images are the 3 other domains' (2 each); 3 models.
    assert {r["group"] for r in rows if r["domain"] == "rot30"} == {"target"}
    assert sum(r["group"] == "source" for r in rows) == 3 * 6 and sum(r["group"] == "target" for r in rows) == 3 * 2
    names = {f["name"] for f in manifest["figures"]}
    assert names == {
        f"class_probs_{c}_{g}" for c in ("direct", "teacher_chain", "generated_chain") for g in ("source", "target")
    }
    for figure in manifest["figures"]:
        assert (figure["width_px"], figure["height_px"]) == _size(PANEL)
        condition, group = figure["name"][len("class_probs_") :].rsplit("_", 1)
        series = {
            m: [float(r[f"p_{condition}"]) for r in rows if r["model"] == m and r["group"] == group] for m in models
        }
        assert all(0 < v <= 1 for values in series.values() for v in values)
        _assert_histogram(figure["data"], series)
    summary = manifest["summary"]["mean_probability"]
    direct = [float(r["p_direct"]) for r in rows if r["model"] == "mtct" and r["group"] == "target"]
    assert summary["mtct"]["direct"]["target"]["mean"] == pytest.approx(np.mean(direct))


def test_token_probs_teacher_and_self(run, tmp_path, capsys):
    out = tmp_path / "token-probs"
    argv = [
        "analyze",
        "token-probs",
        "--adapter",
        str(run),
        "--with-base",
        "--chains",
        "teacher",
        "self",
        "--self-filter",
        "all",
        "--dataset",
        str(dataset_dir()),
        "--domains",
        "rot0",
        "rot30",
        "--out",
        str(out),
        *COMMON,
    ]
    assert main(argv) == 0
    manifest = _manifest(out, capsys)
    rows = _rows(out / "token_probs.csv")
    info = manifest["summary"]["chains"]["self"]
    assert info["written_by"] == run.name and info["keep"] == "all" and info["generated"] == 4
    assert info["kept"] == len({r["image_id"] for r in rows if r["chains"] == "self" and r["model"] == "base"}) > 0
    assert {f["name"] for f in manifest["figures"]} == {
        "token_probs_teacher",
        "token_probs_self",
        "token_probs_base",
        f"token_probs_{run.name}",
    }
    by = lambda m, c: [float(r["prob"]) for r in rows if r["model"] == m and r["chains"] == c]  # noqa: E731
    figures = {f["name"]: f for f in manifest["figures"]}
    _assert_histogram(
        figures["token_probs_teacher"]["data"], {"base": by("base", "teacher"), run.name: by(run.name, "teacher")}
    )
    _assert_histogram(
        figures["token_probs_base"]["data"],
        {"teacher chains": by("base", "teacher"), "self chains": by("base", "self")},
    )
    # Both models scored the same tokens.
    assert [r["token"] for r in rows if r["model"] == "base"] == [r["token"] for r in rows if r["model"] == run.name]


def test_entropy(run, tmp_path, capsys):
    out = tmp_path / "entropy"
    # "before": a full model folder (the untrained tiny model); "after": the run's adapter.
    argv = [
        "analyze",
        "entropy",
        "--before",
        str(tiny_model_dir()),
        "--after",
        str(run),
        "--top",
        "5",
        "--min-count",
        "2",
        "--dataset",
        str(dataset_dir()),
        "--out",
        str(out),
        *COMMON,
    ]
    assert main(argv) == 0
    manifest = _manifest(out, capsys)
    assert manifest["summary"]["chains"] == {"images": 6, "with_chain": 6}  # training domains only, 2 images each
    figures = {f["name"]: f for f in manifest["figures"]}
    assert (figures["entropy_top_tokens"]["width_px"], figures["entropy_top_tokens"]["height_px"]) == _size(TALL)
    changes = [
        TypeChange(r["group"], int(r["count"]), float(r["before"]), float(r["after"]))
        for r in _rows(out / "entropy_by_token.csv")
    ]
    expected = top_reductions(changes, 5, 2)
    plotted = _rows(figures["entropy_top_tokens"]["data"])
    assert [r["label"] for r in plotted] == [c.group for c in expected]
    assert [float(r["value"]) for r in plotted] == pytest.approx([c.reduction for c in expected])
    stages = [r["label"] for r in _rows(figures["entropy_by_stage"]["data"])]
    assert stages[:5] == ["SUMMARY", "CAPTION", "REASONING", "REFLECTION", "CONCLUSION"]
    text = (out / "entropy_examples.md").read_text()
    assert text.count("[[") >= len(expected) and f"`{expected[0].group}`" in text


def test_losses_of_the_run(run, tmp_path, capsys):
    out = tmp_path / "losses"
    assert main(["analyze", "losses", "--run", str(run), "--out", str(out)]) == 0
    manifest = _manifest(out, capsys)
    rows = _rows(out / "losses.csv")
    for stage in ("mtct", "round-1"):
        history = json.loads((run / "stages" / stage / "trainer_state.json").read_text())["log_history"]
        logged = [e for e in history if "loss" in e]
        mine = [r for r in rows if r["round"] == stage]
        assert [float(r["cls_loss"]) for r in mine] == pytest.approx([e["cls_loss"] for e in logged])
        assert [float(r["reasoning_loss"]) for r in mine] == pytest.approx([e["reasoning_loss"] for e in logged])
    figures = {f["name"]: f for f in manifest["figures"]}
    assert set(figures) == {"losses_cls_loss", "losses_reasoning_loss", "losses_loss"}
    plotted = _rows(figures["losses_reasoning_loss"]["data"])
    assert [r["series"] for r in plotted] == [r["round"] for r in rows]
    assert [float(r["y"]) for r in plotted] == pytest.approx([float(r["reasoning_loss"]) for r in rows])


def test_losses_from_a_written_log(tmp_path, capsys):
    def state(folder, losses):
        folder.mkdir(parents=True)
        history = [
            {"step": i + 1, "epoch": 0.5 * (i + 1), "loss": c + r, "cls_loss": c, "reasoning_loss": r}
            for i, (c, r) in enumerate(losses)
        ]
        history.append({"step": len(losses), "train_loss": 1.0, "train_runtime": 2.0})
        (folder / "trainer_state.json").write_text(json.dumps({"log_history": history}))

    state(tmp_path / "run/stages/round-10", [(0.1, 0.2)])
    state(tmp_path / "run/stages/round-2", [(0.5, 0.9), (0.4, 0.8)])
    state(tmp_path / "run/stages/mtct/checkpoint-2", [(2.0, 3.0), (1.0, 2.0)])
    state(tmp_path / "run/stages/mtct/checkpoint-10", [(2.0, 3.0), (1.0, 2.0), (0.7, 1.5)])
    out = tmp_path / "figs"
    assert main(["analyze", "losses", "--run", str(tmp_path / "run"), "--out", str(out)]) == 0
    manifest = _manifest(out, capsys)
    plotted = _rows(next(f["data"] for f in manifest["figures"] if f["name"] == "losses_cls_loss"))
    assert [(r["series"], float(r["x"]), float(r["y"])) for r in plotted] == [
        ("mtct", 1, 2.0),
        ("mtct", 2, 1.0),
        ("mtct", 3, 0.7),
        ("round-2", 1, 0.5),
        ("round-2", 2, 0.4),
        ("round-10", 1, 0.1),
    ]
    # An MTCT output folder (its own trainer_state.json) and the file itself: one line named after the folder.
    for run in (tmp_path / "run/stages/round-2", tmp_path / "run/stages/round-2/trainer_state.json"):
        assert main(["analyze", "losses", "--run", str(run), "--out", str(tmp_path / "one")]) == 0
        manifest = _manifest(tmp_path / "one", capsys)
        assert [r["round"] for r in manifest["summary"]["rounds"]] == ["round-2"]
    assert main(["analyze", "losses", "--run", str(tmp_path / "nothing"), "--out", str(out)]) == 2
    assert "No run folder" in capsys.readouterr().err


def test_default_dataset_is_built_once_under_the_hubs_home(tmp_path, monkeypatch, capsys):
    """Without --dataset the embedded benchmark is built into huggingface_hub's HF_HOME (XDG rules included)."""
    from datasets import load_dataset
    from huggingface_hub import constants

    from rdmldg_hf.commands import analyze

    monkeypatch.setattr(constants, "HF_HOME", str(tmp_path / "hf-home"))
    folder = analyze._embedded_dataset()
    assert Path(folder) == tmp_path / "hf-home" / "rdmldg" / "embedded-rotdigits"
    assert "Built the embedded benchmark" in capsys.readouterr().out
    assert analyze._embedded_dataset() == folder and capsys.readouterr().out == ""  # found, not rebuilt
    assert set(load_dataset(folder, "rotdigits")) == {"rot0", "rot30", "rot60", "rot90"}
