"""A 4-domain PACS-format folder (7 classes, a few images each) built into DomainBed-Reasoning, for sweep tests."""

from __future__ import annotations

import json
from pathlib import Path

from helpers.hub import make_domainbed_folder
from helpers.officehome import build_with_chains, chain_about
from rdmldg_hf.benchmarks import get_benchmark

PACS = get_benchmark("pacs")


def build_pacs(root: Path, per_class: int = 3) -> Path:
    """``root/PACS/<domain>/<class>/<i>.png`` (every class in every domain), each image with a chain concluding its
    class, built with ``rdmldg build``; returns the dataset folder."""
    make_domainbed_folder(root, PACS.folder, PACS.domain_folders, PACS.classes, per_class=per_class, size=16)
    chains = root / "chains.jsonl"
    lines = [
        {"image_id": f"{domain}/{cls}/{i:03d}.png", "reasoning": chain_about(PACS.class_names[c])}
        for domain in PACS.domain_folders
        for c, cls in enumerate(PACS.classes)
        for i in range(per_class)
    ]
    chains.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return build_with_chains("pacs", root / PACS.folder, chains, root / "domainbed-reasoning")
