"""`rdmldg eval` on a Hub-layout folder: adapters, in-context demos, and bad inputs."""

from __future__ import annotations

import csv
import json

import pytest

from helpers.evaluation import adapter_copy, trained_adapter
from helpers.hub import make_domainbed_folder
from helpers.mtct import tiny_model_dir
from helpers.sarr import tiny_rows
from rdmldg_hf.benchmarks import get_benchmark
from rdmldg_hf.cli import main
from rdmldg_hf.data.build import build_dataset
from rdmldg_hf.data.hub_layout import write_config


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """rotdigits, 4 images per domain; the second image of rot30 is a broken file."""
    out = tmp_path_factory.mktemp("data") / "dataset"
    data = tiny_rows(4)
    items = data.to_list()
    broken = next(i for i, row in enumerate(items) if row["domain"] == "rot30") + 1
    items[broken]["image"] = {"bytes": b"this is not a png", "path": "broken.png"}
    fixed = type(data).from_list(items, features=data.features)
    splits = {
        d: fixed.filter(lambda x, d=d: x == d, input_columns="domain") for d in get_benchmark("rotdigits").domains
    }
    write_config(out, "rotdigits", splits, "rotdigits")
    return out


def _eval(folder, *extra):
    return main(["eval", "--dataset", str(folder), "--config", "rotdigits", *extra])


def test_eval_an_adapter_writes_results(folder, tmp_path, capsys):
    output = tmp_path / "results.json"
    assert (
        _eval(folder, "--adapter", str(trained_adapter()), "--domains", "rot30", "rot60", "--output", str(output)) == 0
    )
    record = json.loads(output.read_text())
    metrics = record["metrics"]
    assert record["mode"] == "direct" and record["domains"] == ["rot30", "rot60"]
    assert metrics["count_per_domain"] == {"rot30": 4, "rot60": 4}
    assert metrics["unreadable_per_domain"] == {"rot30": 1}
    assert set(metrics["per_domain"]) == {"rot30", "rot60"}
    printed = capsys.readouterr().out
    assert "rot30" in printed and "could not be decoded" in printed


def test_eval_in_context_baseline(folder, tmp_path):
    output = tmp_path / "icl.json"
    code = _eval(
        folder,
        "--model",
        str(tiny_model_dir()),
        "--domains",
        "rot90",
        "--icl-shots",
        "3",
        "--icl-demos",
        "balanced",
        "--mode",
        "direct-generate",
        "--max-new-tokens",
        "3",
        "--output",
        str(output),
    )
    assert code == 0
    record = json.loads(output.read_text())
    assert record["icl"] == {
        "shots": 3,
        "strategy": "balanced",
        "seed": 0,
        "train_domains": ["rot0", "rot30", "rot60"],
    }
    assert record["metrics"]["count_per_domain"] == {"rot90": 4}


def test_bad_inputs_are_refused_with_what_to_do(folder, tmp_path, capsys):
    adapter = str(trained_adapter())
    assert _eval(folder, "--adapter", adapter, "--domains", "sketch") == 2
    assert (
        "Domain 'sketch' is not in the config 'rotdigits'. Its domains: rot0, rot30, rot60, rot90"
        in capsys.readouterr().err
    )
    assert _eval(folder, "--model", str(tiny_model_dir()), "--domains", "rot0", "--icl-shots", "20") == 2
    assert "--icl-shots 20 is larger than the 12 demos available" in capsys.readouterr().err
    moved = adapter_copy(tmp_path / "moved")
    config = json.loads((moved / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "/nowhere/tiny-base"
    (moved / "adapter_config.json").write_text(json.dumps(config))
    assert _eval(folder, "--adapter", str(moved), "--domains", "rot0") == 2
    err = capsys.readouterr().err
    assert "'/nowhere/tiny-base'" in err and "--model" in err
    assert _eval(folder, "--adapter", str(moved), "--model", str(tiny_model_dir()), "--domains", "rot0") == 0
    pacs = get_benchmark("pacs")
    make_domainbed_folder(tmp_path / "db", pacs.folder, pacs.domain_folders, pacs.classes[:2], per_class=1, size=32)
    build_dataset("pacs", tmp_path / "pacs", images=tmp_path / "db")
    assert main(["eval", "--dataset", str(tmp_path / "pacs"), "--config", "pacs", "--adapter", adapter]) == 2
    assert "trained on benchmark 'rotdigits' but the dataset is 'pacs'" in capsys.readouterr().err
    assert _eval(folder, "--api", "gpt-4o", "--adapter", adapter) == 2
    assert "do not combine it with --model or --adapter" in capsys.readouterr().err


def test_eval_samples_by_class_records_the_rows_and_writes_predictions_and_confusion(folder, tmp_path, capsys):
    from datasets import load_dataset

    from rdmldg_hf.protocol import stratified_sample

    output = tmp_path / "out" / "results.json"
    code = _eval(
        folder,
        "--adapter",
        str(trained_adapter()),
        "--domains",
        "rot30",
        "rot60",
        "--limit",
        "2",
        "--sample-seed",
        "1",
        "--confusion-matrix",
        "--output",
        str(output),
    )
    assert code == 0
    record = json.loads(output.read_text())
    assert record["rows"] == {
        "part": "whole domain",
        "images_per_domain": {"rot30": 2, "rot60": 2},
        "sample": "stratified by class",
        "seed": 1,
        "of_images_per_domain": {"rot30": 4, "rot60": 4},
    }
    assert record["trained_domains_scored"] == ["rot60"]  # the adapter held out rot30 only
    data = load_dataset(str(folder), "rotdigits")
    expected = [list(stratified_sample(data[d], 2, seed=1)["image_id"]) for d in ("rot30", "rot60")]
    lines = [json.loads(line) for line in (output.parent / "predictions.jsonl").read_text().splitlines()]
    assert [r["image_id"] for r in lines] == expected[0] + expected[1]
    assert all(len(r["probabilities"] or []) in (0, 10) and r["mode"] == "direct" for r in lines)
    assert sum(r["correct"] for r in lines if r["domain"] == "rot60") / 2 == record["metrics"]["per_domain"]["rot60"]
    with open(output.parent / "confusion_matrix.csv", newline="") as handle:
        cells = {(r["true"], r["predicted"]): int(r["count"]) for r in csv.DictReader(handle)}
    assert sum(cells.values()) == 4 and len(cells) == 10 * 11  # every class x (every class + invalid)
    names = get_benchmark("rotdigits").class_names
    for r in lines:
        assert cells[(names[r["label"]], names[r["prediction"]] if r["prediction"] >= 0 else "invalid")] >= 1
    assert (output.parent / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    assert "stratified sample of 4 of 8 images (seed 1) of the whole domain" in capsys.readouterr().out

    # The validation (out) part of a training domain, with the holdout the adapter recorded or one given.
    assert _eval(folder, "--adapter", str(trained_adapter()), "--domains", "rot60", "--split", "out") == 2
    assert "the holdout fraction is 0 (the adapter trained on every image)" in capsys.readouterr().err
    output = tmp_path / "val.json"
    assert (
        _eval(
            folder,
            "--adapter",
            str(trained_adapter()),
            "--domains",
            "rot60",
            "--split",
            "out",
            "--holdout-fraction",
            "0.5",
            "--output",
            str(output),
        )
        == 0
    )
    record = json.loads(output.read_text())
    assert record["rows"] == {"part": "out part (validation)", "images_per_domain": {"rot60": 2}}
    assert record["holdout"] == {"holdout_fraction": 0.5, "holdout_seed": 0, "holdout_style": "hash"}
    assert "trained_domains_scored" not in record and (tmp_path / "val.predictions.jsonl").is_file()
    assert _eval(folder, "--adapter", str(trained_adapter()), "--holdout-seed", "1") == 2
    assert "--holdout-seed set the holdout of --split in/out" in capsys.readouterr().err


def _edit_config(**changes):
    def edit(folder):
        config = json.loads((folder / "adapter_config.json").read_text())
        (folder / "adapter_config.json").write_text(json.dumps({**config, **changes}))

    return edit


def _write_config(value):
    return lambda folder: (folder / "adapter_config.json").write_text(json.dumps(value))


@pytest.mark.parametrize(
    "break_adapter, message",
    [
        (_write_config({}), "adapter_config.json has no peft_type"),
        (_write_config([]), "adapter_config.json holds a JSON list, not an object"),
        (_edit_config(base_model_name_or_path=None), "names no base model (base_model_name_or_path is None)"),
        (_edit_config(peft_type="BOGUS"), "has peft_type 'BOGUS', which is not a PEFT method (valid: "),
        (lambda folder: (folder / "adapter_model.safetensors").unlink(), "has no adapter_model.safetensors"),
        (_edit_config(target_modules=["no_such_module"]), "targets the modules ['no_such_module']"),
        (_edit_config(r=8), "holds LoRA weights of rank 4 (e.g. base_model.model."),
    ],
    ids=["empty", "list", "no-base", "bogus-type", "no-weights", "no-target", "rank"],
)
def test_a_broken_adapter_is_named_not_its_base(folder, tmp_path, capsys, break_adapter, message):
    """What is wrong with the adapter, never 'the base model cannot be found' (the base is fine), nor a traceback."""
    adapter = adapter_copy(tmp_path / "adapter")
    break_adapter(adapter)
    assert _eval(folder, "--adapter", str(adapter), "--domains", "rot0") == 2
    err = capsys.readouterr().err
    assert message in err and f"The adapter {str(adapter)!r}" in err and "cannot be found" not in err


def _plain_label_folder(root, labels):
    """rotdigits rows whose label column is a plain integer (no ClassLabel), as a Hub-layout config ``mine``."""
    from datasets import Value

    rows = tiny_rows(4, domains=("rot0", "rot30"))
    rows = rows.cast_column("label", Value("int64")).map(
        lambda row, i: {"label": labels.get(i, row["label"])}, with_indices=True
    )
    for domain in ("rot0", "rot30"):
        rows.filter(lambda d, domain=domain: d == domain, input_columns="domain").to_parquet(
            str(root / "mine" / f"{domain}.parquet")
        )
    files = "\n".join(f"  - split: {d}\n    path: mine/{d}.parquet" for d in ("rot0", "rot30"))
    (root / "README.md").write_text(f"---\nconfigs:\n- config_name: mine\n  data_files:\n{files}\n---\n")
    return root


def test_name_the_benchmark_of_plain_labels_and_leave_unlabeled_images_out(folder, tmp_path, capsys):
    data = _plain_label_folder(tmp_path / "plain", {0: -1, 5: -1, 6: -1})  # one unlabeled rot0 image, two of rot30
    adapter = str(trained_adapter())

    def run(*extra):
        return main(["eval", "--dataset", str(data), "--config", "mine", "--adapter", adapter, *extra])

    assert run() == 2
    assert "Name the benchmark: `rdmldg eval --benchmark officehome`" in capsys.readouterr().err
    output = tmp_path / "results.json"
    assert run("--benchmark", "rotdigits", "--output", str(output)) == 0
    metrics = json.loads(output.read_text())["metrics"]
    assert metrics["unlabeled"] == 3 and metrics["unlabeled_per_domain"] == {"rot0": 1, "rot30": 2}
    assert metrics["count_per_domain"] == {"rot0": 3, "rot30": 2}  # scored: the labeled images only
    predictions = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 5 and all(p["label"] >= 0 for p in predictions)
    assert "3 images without a label (-1) left out of the accuracy" in capsys.readouterr().out

    pacs = [
        "eval",
        "--dataset",
        str(data),
        "--config",
        "mine",
        "--model",
        str(tiny_model_dir()),
        "--benchmark",
        "pacs",
    ]
    assert main(pacs) == 2  # PACS has 7 classes
    assert "Labels [7] are not classes of benchmark 'pacs' (0..6; -1 means no label)" in capsys.readouterr().err
    assert _eval(folder, "--adapter", adapter, "--benchmark", "pacs", "--domains", "rot0") == 2
    assert "Benchmark 'pacs' was named, but the dataset's label classes (zero, one, two, three, ...)" in (
        capsys.readouterr().err
    )
