"""rdmldg_hf.protocol: DomainBed's in/out split image for image, stratified subsets, the selection rule."""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import ClassLabel, Dataset, Features, Value
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from rdmldg_hf.benchmarks import BENCHMARKS, get_benchmark
from rdmldg_hf.data.domainbed import scan_domainbed
from rdmldg_hf.evaluation.lodo_config import LodoConfig
from rdmldg_hf.protocol import (
    CheckpointSelector,
    holdout_ids,
    lodo_split,
    selection_score,
    split_holdout,
    stratified_sample,
)
from rdmldg_hf.protocol.subsets import class_quotas
from rdmldg_hf.recipe_setup import parse_recipe_args

PACS = get_benchmark("pacs")


def _pacs_folder(root: Path) -> Path:
    """A PACS folder with uneven classes, nested folders, upper-case extensions and names whose sort order differs
    between a plain path sort and ImageFolder's walk (``z.png`` beside a ``sub/`` folder)."""
    rng = np.random.default_rng(0)
    folder = root / "PACS"
    for d, domain in enumerate(PACS.domain_folders):
        for c, cls in enumerate(PACS.classes[:3]):
            names = [f"{cls[0]}{i:02d}.png" for i in range(3 + (d + c) % 4)] + ["z.PNG", "sub/a.jpg", "sub-b/x.jpeg"]
            for name in names:
                path = folder / domain / cls / name
                path.parent.mkdir(parents=True, exist_ok=True)
                pixels = rng.integers(0, 255, (4, 4, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(path, format="JPEG" if name.endswith(("jpg", "jpeg")) else "PNG")
    return folder


def _imagefolder_out_part(folder: Path, fraction: float, trial_seed: int) -> set[str]:
    """DomainBed's out part computed as DomainBed does: ImageFolder's walk, then misc.split_dataset per environment."""
    extensions = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
    out: set[str] = set()
    environments = sorted(entry.name for entry in os.scandir(folder) if entry.is_dir())
    for env_i, environment in enumerate(environments):
        samples = []
        classes = sorted(entry.name for entry in os.scandir(folder / environment) if entry.is_dir())
        for cls in classes:
            for root, _, fnames in sorted(os.walk(folder / environment / cls, followlinks=True)):
                for fname in sorted(fnames):
                    if fname.lower().endswith(extensions):
                        samples.append(Path(root, fname).relative_to(folder).as_posix())
        keys = list(range(len(samples)))
        seed = int(hashlib.md5(str((trial_seed, env_i)).encode("utf-8")).hexdigest(), 16) % (2**31)
        np.random.RandomState(seed).shuffle(keys)
        out.update(samples[k] for k in keys[: int(len(samples) * fraction)])
    return out


def _rows_of(folder: Path) -> Dataset:
    scan = scan_domainbed(PACS, folder, verify=False)
    features = Features(
        {"image_id": Value("string"), "domain": Value("string"), "label": ClassLabel(names=list(PACS.classes))}
    )
    return Dataset.from_list(
        [{"image_id": i.image_id, "domain": i.domain, "label": i.label} for i in scan.images], features=features
    )


def test_domainbed_holdout_is_domainbeds_split_image_for_image(tmp_path):
    folder = _pacs_folder(tmp_path)
    rows = _rows_of(folder).shuffle(seed=3)  # row order must not matter
    for fraction, seed in ((0.2, 0), (0.35, 7)):
        expected = _imagefolder_out_part(folder, fraction, seed)
        _, out = split_holdout(rows, fraction, seed, "domainbed")
        assert set(out["image_id"]) == expected
    # Holding a domain out keeps the environment indices: the other domains' validation is unchanged.
    split = lodo_split(rows, "photo", 0.2, 0, holdout_style="domainbed", test_split="in")
    expected = _imagefolder_out_part(folder, 0.2, 0)
    assert set(split.validation["image_id"]) == {i for i in expected if not i.startswith("photo/")}
    assert set(split.test["image_id"]) == {i for i in rows["image_id"] if i.startswith("photo/")} - expected
    # Our default hash split has the same sizes but other images.
    _, hashed = split_holdout(rows, 0.2, 0)
    assert len(hashed) == len(expected) and set(hashed["image_id"]) != expected
    assert all(list(b.domain_folders) == sorted(b.domain_folders) for b in BENCHMARKS.values())
    with pytest.raises(
        ValueError, match=r"only loads <domain>/<class>/<file> with the extensions .*'art_painting/dog/x.gif'"
    ):
        holdout_ids(["art_painting/dog/x.gif"], ["art_painting"], 0.2, 0, "domainbed", PACS.domains)
    with pytest.raises(ValueError, match="Unknown holdout_style 'random'. Valid: hash, domainbed"):
        split_holdout(rows, 0.2, 0, "random")


def _class_by_class(per_class: dict[int, int], domains=("rot0", "rot30")) -> Dataset:
    """Rows written class by class, as real DomainBed splits are."""
    rows = [
        {"image_id": f"{d}/{c}/{i:03d}.png", "domain": d, "label": c}
        for d in domains
        for c, n in per_class.items()
        for i in range(n)
    ]
    return Dataset.from_list(rows)


# PACS art_painting's class counts (DomainBed's folders), and OfficeHome's 65 classes with 15 to 59 images each
# (2,285 in all), shaped like its Art domain (2,427 images; its per-class counts are not available offline).
PACS_ART_COUNTS = dict(zip(PACS.classes, (379, 255, 285, 184, 201, 295, 449)))
OFFICEHOME_LIKE_COUNTS = {name: 15 + (23 * i) % 45 for i, name in enumerate(get_benchmark("officehome").classes)}


@pytest.mark.parametrize("counts", [PACS_ART_COUNTS, OFFICEHOME_LIKE_COUNTS], ids=["pacs-art", "officehome-65"])
def test_class_quotas_only_grow_with_the_size(counts):
    total = sum(counts.values())
    previous = dict.fromkeys(counts, 0)
    for size in range(1, total + 1):
        quotas = class_quotas(counts, size)
        assert sum(quotas.values()) == size
        # One more place goes to exactly one class; no class ever loses one (nested samples).
        assert sum(quotas[k] - previous[k] for k in counts) == 1 and all(quotas[k] >= previous[k] for k in counts)
        assert all(abs(quotas[k] - size * n / total) < 1 for k, n in counts.items())  # proportional, within 1
        previous = quotas
    assert class_quotas(counts, total + 5) == counts


def test_quotas_of_the_reported_cases_are_nested():
    small, large = class_quotas({"A": 6, "B": 6, "C": 2}, 10), class_quotas({"A": 6, "B": 6, "C": 2}, 11)
    assert all(small[k] <= large[k] for k in small)  # largest remainders gave C 2 places of 10 and 1 of 11
    assert class_quotas(PACS_ART_COUNTS, 115)["guitar"] <= class_quotas(PACS_ART_COUNTS, 116)["guitar"]


@settings(max_examples=60, deadline=None)
@given(
    counts=st.lists(st.integers(1, 12), min_size=1, max_size=6),
    size=st.integers(1, 40),
    seed=st.integers(0, 3),
    order=st.randoms(use_true_random=False),
)
def test_quotas_do_not_depend_on_the_order_of_the_classes(counts, size, seed, order):
    by_label = dict(enumerate(counts))
    shuffled = list(by_label.items())
    order.shuffle(shuffled)
    assert class_quotas(dict(shuffled), size, seed) == class_quotas(by_label, size, seed)


@settings(max_examples=30, deadline=None)
@given(
    counts=st.lists(st.integers(1, 4), min_size=2, max_size=4),
    size=st.integers(1, 10),
    seed=st.integers(0, 3),
    shuffle_seed=st.integers(0, 2**16),
)
def test_samples_do_not_depend_on_row_order_and_are_nested(counts, size, seed, shuffle_seed):
    rows = _class_by_class(dict(enumerate(counts)), domains=("rot0",))
    sample = set(stratified_sample(rows, size, seed)["image_id"])
    assert set(stratified_sample(rows.shuffle(seed=shuffle_seed), size, seed)["image_id"]) == sample
    assert set(stratified_sample(rows, size + 1, seed)["image_id"]) >= sample


def test_subsets_are_stratified_seeded_samples_drawn_after_the_holdout():
    rows = _class_by_class({0: 30, 1: 20, 2: 10})
    sample = stratified_sample(rows, 12, seed=0)
    for domain in ("rot0", "rot30"):
        labels = Counter(label for label, d in zip(sample["label"], sample["domain"]) if d == domain)
        assert labels == {0: 6, 1: 4, 2: 2}  # the domain's class shares, not the first 12 rows (class 0 only)
    again = stratified_sample(rows.shuffle(seed=1), 12, seed=0)
    assert set(again["image_id"]) == set(sample["image_id"])  # row order does not matter
    assert set(stratified_sample(rows, 6, seed=0)["image_id"]) <= set(sample["image_id"])  # nested
    assert set(stratified_sample(rows, 12, seed=1)["image_id"]) != set(sample["image_id"])
    assert class_quotas({"a": 5, "b": 3, "c": 1}, 4) == {"a": 3, "b": 1, "c": 0}  # 2.2, 1.3, 0.4 of 4 places
    assert len(stratified_sample(rows, 500)) == len(rows)
    with pytest.raises(ValueError, match="at least 1 image per domain; got 0"):
        stratified_sample(rows, 0)

    # A training subset never moves an image across the holdout of the whole domain.
    whole = lodo_split(rows, "rot30", 0.2, 0)
    small = lodo_split(rows, "rot30", 0.2, 0, max_train_images_per_domain=10)
    assert set(small.train["image_id"]) <= set(whole.train["image_id"])
    assert set(small.validation["image_id"]) <= set(whole.validation["image_id"])
    assert len(small.train) == 10 and len(small.validation) == 2 and len(small.test) == 60
    assert Counter(small.train["label"]) == {0: 5, 1: 3, 2: 2}


def test_selection_rule_and_the_selector_keep_the_best_checkpoint():
    metrics = {"accuracy": 0.7, "mean_accuracy": 0.55}
    assert selection_score(metrics) == 0.55 and selection_score(metrics, "pooled") == 0.7
    with pytest.raises(ValueError, match="Unknown selection rule 'max'. Valid: mean, pooled"):
        selection_score(metrics, "max")
    model = torch.nn.Linear(1, 1, bias=False)
    selector = CheckpointSelector(lambda m: -abs(float(m.weight) - 2.0))
    for step, value in enumerate([0.0, 2.5, 1.5, 3.0, 2.5]):
        with torch.no_grad():
            model.weight.fill_(value)
        selector.check(model, f"step-{step}")
    scores = [h["validation_accuracy"] for h in selector.history]
    assert selector.best == max(scores) and selector.best_at == "step-1"  # first of the tied best
    selector.restore(model)
    assert float(model.weight) == 2.5 and selector.score(model) == selector.best


@pytest.mark.parametrize(
    "values, message",
    [
        ({"select_every": 0}, "select_every must be 'epoch', 'final' or a number of steps above 0; got 0"),
        ({"test_split": "out"}, "Unknown test_split 'out'. Valid: whole, in"),
        ({"holdout_style": "md5"}, "Unknown holdout_style 'md5'"),
        ({"selection_rule": "best"}, "Unknown selection rule 'best'"),
        ({"reasoning_eval_limit": 0}, "reasoning_eval_limit must be 1 or more"),
    ],
)
def test_lodo_settings_are_checked(values, message):
    with pytest.raises(ValueError, match=message):
        LodoConfig.from_dict(values)


def test_a_split_records_how_it_was_made_and_may_hold_out_no_domain(tmp_path):
    rows = _rows_of(_pacs_folder(tmp_path))
    by_domain = rows.to_pandas().groupby("domain").size().to_dict()
    split = lodo_split(rows, "sketch", 0.25, 3, holdout_style="domainbed", test_split="in")
    assert split.record() == {
        "test_domain": "sketch",
        "holdout_fraction": 0.25,
        "holdout_seed": 3,
        "holdout_style": "domainbed",
        "test_split": "in",
        "max_train_images_per_domain": None,
        "sample_seed": 0,
    }
    assert "sketch" not in set(split.train["domain"]) | set(split.validation["domain"])
    everything = lodo_split(rows, None, 0.25)  # no held-out domain: every domain trains, nothing is tested
    assert everything.record()["test_domain"] is None and len(everything.test) == 0
    assert everything.train_domains == sorted(by_domain)
    assert len(everything.train) + len(everything.validation) == len(rows)
    assert Counter(everything.validation["domain"]) == {d: int(n * 0.25) for d, n in by_domain.items()}


def test_lodo_config_reads_its_sections_and_steps_from_the_command_line(tmp_path):
    (config,) = parse_recipe_args(
        (LodoConfig,),
        [
            "--dataset_name",
            "data",
            "--model_name_or_path",
            "m",
            "--select_every",
            "5",
            "--training",
            '{"max_steps": 3}',
            "--sarr",
            '{"num_rounds": 2}',
            "--overwrite",
        ],
    )
    assert (config.dataset_name, config.model_name_or_path, config.dataset_config) == ("data", "m", "rotdigits")
    assert config.select_every == 5 and config.training == {"max_steps": 3} and config.sarr == {"num_rounds": 2}
    assert config.overwrite and "overwrite" not in config.fingerprint() and config.tiny_sizes == {}
    assert all(f.metadata.get("help") for f in fields(LodoConfig))
    with pytest.raises(ValueError, match=r"section 'sarr' num_round; .*did you mean 'num_rounds'"):
        LodoConfig.from_dict({"sarr": {"num_round": 2}})
    with pytest.raises(ValueError, match=r"Unknown field\(s\) dataset; .*did you mean 'dataset_name'"):
        LodoConfig.from_dict({"dataset": "data"})
