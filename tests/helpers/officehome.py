"""A tiny OfficeHome in DomainBed's on-disk format, built into DomainBed-Reasoning with `rdmldg build`.

Shared by the paper-config recipe tests and the real-class-list tests: the real domain folders
(``Art``, ``Clipart``, ``Product``, ``Real World``) and real class folders (``Alarm_Clock``, ``TV``,
...), a few generated JPEGs per class, written class by class as DomainBed's download leaves them,
and a chain file whose conclusions use display names, aliases and a few wrong or broken chains.
"""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image, ImageDraw

from rdmldg_hf.benchmarks import get_benchmark
from rdmldg_hf.chains import render_chain
from rdmldg_hf.cli import main as rdmldg_main

OFFICEHOME = get_benchmark("officehome")
# Two multi-word, aliased or oddly cased classes per domain; the classes of a domain differ
# between domains, as the class mix of real domains does.
DOMAIN_CLASSES = {
    "Art": ("Alarm_Clock", "TV"),
    "Clipart": ("Desk_Lamp", "Postit_Notes"),
    "Product": ("Alarm_Clock", "ToothBrush"),
    "Real World": ("TV", "Exit_Sign"),
}
IMAGES_PER_CLASS = 2
# Conclusions written the way a teacher writes them; each must still resolve to its class.
CONCLUSION_SPELLINGS = {"TV": "Television", "Postit_Notes": "post-it notes", "Exit_Sign": "The exit sign."}


def write_officehome_folder(root: Path) -> Path:
    """``root/office_home/<domain>/<class>/<nnnnn>.jpg``: distinct coloured shapes, class by class."""
    folder = root / OFFICEHOME.folder
    for d, (domain, classes) in enumerate(DOMAIN_CLASSES.items()):
        for c, class_folder in enumerate(classes):
            target = folder / domain / class_folder
            target.mkdir(parents=True)
            for i in range(IMAGES_PER_CLASS):
                image = Image.new("RGB", (40, 32), (40 * d + 30, 90 * c + 20, 60 * i + 50))
                ImageDraw.Draw(image).ellipse((4 + 6 * c, 4, 30, 20 + 4 * i), fill=(250 - 50 * d, 30, 200))
                image.save(target / f"{i + 1:05d}.jpg", quality=90)
    return folder


def chain_about(conclusion: str) -> str:
    """A valid five-stage chain concluding ``conclusion``."""
    return render_chain(
        "I look at the object.",
        "An office object.",
        f"Its shape is that of {conclusion}.",
        "Nothing else fits.",
        conclusion,
    )


def write_chain_file(folder: Path, path: Path) -> dict[str, int]:
    """A JSONL chain file for the images of ``folder``: every image's chain but one per domain, that one
    concluding another class, plus a chain for an image that does not exist. Returns the expected counts."""
    lines = []
    for domain, classes in DOMAIN_CLASSES.items():
        for c, class_folder in enumerate(classes):
            for i in range(IMAGES_PER_CLASS):
                image_id = f"{domain}/{class_folder}/{i + 1:05d}.jpg"
                said = classes[1 - c] if (c, i) == (1, 1) else class_folder  # one wrong conclusion per domain
                spelled = CONCLUSION_SPELLINGS.get(said, OFFICEHOME.class_names[OFFICEHOME.class_index(said)])
                lines.append({"image_id": image_id, "reasoning": chain_about(spelled), "source": "teacher-test"})
    lines.append({"image_id": "Art/Mug/00001.jpg", "reasoning": chain_about("mug")})
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n", encoding="utf-8")
    images = len(DOMAIN_CLASSES) * 2 * IMAGES_PER_CLASS
    return {"images": images, "accepted": images - len(DOMAIN_CLASSES), "invalid": len(DOMAIN_CLASSES), "unmatched": 1}


def build_with_chains(benchmark: str, images: Path, chains: Path, out: Path) -> Path:
    """``rdmldg build`` of a DomainBed folder with a chain file; the dataset folder."""
    code = rdmldg_main(
        ["build", "--benchmark", benchmark, "--images", str(images), "--chains", str(chains), "--out", str(out)]
    )
    assert code == 0, f"rdmldg build exited with {code}"
    return out


def build_officehome(root: Path) -> Path:
    """Write the folder and the chain file under ``root`` and run ``rdmldg build``; the dataset folder."""
    images = write_officehome_folder(root / "DomainBed")
    chains = root / "chains.jsonl"
    write_chain_file(images, chains)
    return build_with_chains("officehome", root / "DomainBed", chains, root / "domainbed-reasoning")
