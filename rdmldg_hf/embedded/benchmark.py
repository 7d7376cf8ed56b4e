"""The embedded default benchmark: RotatedDigits, made from images that ship with scikit-learn.

scikit-learn's ``load_digits`` holds 1,797 real handwritten digits (8x8, 17 grey levels).
As in DomainBed's RotatedMNIST, the images are split into four disjoint domains by a
seeded permutation cut in quarters, and each domain is rotated by its angle (0, 30, 60,
90 degrees). Images are upscaled to 32x32 RGB (light strokes on a dark background) and
encoded as PNG. Every image gets a chain from a deterministic template writer
(``chain_source="template"``) whose cues are specific to the digit's class.
"""

from __future__ import annotations

import functools
import importlib.util
import io
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from PIL import Image

from ..benchmarks import EMBEDDED_BENCHMARK, Benchmark, get_benchmark
from ..chains import render_chain
from ..data.schema import ChainRecord, SourceImage
from ..prompts import PROMPT_VERSION

__all__ = [
    "EMBEDDED_SEED",
    "IMAGE_SIZE",
    "TEMPLATE_CHAIN_SOURCE",
    "embedded_source_images",
    "embedded_chains",
    "template_chain",
    "domain_angle",
    "load_digits_arrays",
]

EMBEDDED_SEED = 0
IMAGE_SIZE = 32
TEMPLATE_CHAIN_SOURCE = "template"

# Class-specific cues: (two shape cues, the class most easily confused with it, what tells them apart).
_DIGIT_CUES: dict[str, tuple[str, str, str, str]] = {
    "zero": (
        "a single closed oval loop",
        "no stroke crossing the inside of the loop",
        "six",
        "a six has a tail rising from its loop",
    ),
    "one": (
        "one long straight stroke",
        "at most a short flag at the top and no loop",
        "seven",
        "a seven has a long horizontal bar on top",
    ),
    "two": (
        "a curved hook at the top",
        "a flat horizontal base stroke at the bottom",
        "seven",
        "a seven has no base stroke",
    ),
    "three": (
        "two bumps open to the same side",
        "no closed loop and no vertical spine",
        "eight",
        "an eight closes both of its loops",
    ),
    "four": (
        "a vertical stroke crossed by a horizontal bar",
        "an open triangle-like corner on one side",
        "nine",
        "a nine has a closed round head",
    ),
    "five": (
        "a short flat bar joined to a vertical stroke on top",
        "an open curved belly below",
        "six",
        "a six closes its lower loop",
    ),
    "six": (
        "a long curved stroke sweeping down",
        "a closed loop at the bottom end",
        "zero",
        "a zero has no tail above its loop",
    ),
    "seven": (
        "a horizontal top stroke",
        "a long diagonal descending from its end",
        "one",
        "a one has no long horizontal bar",
    ),
    "eight": (
        "two closed loops stacked on each other",
        "a crossing point where the loops meet",
        "three",
        "a three leaves its loops open",
    ),
    "nine": (
        "a closed loop at the top",
        "a stroke descending from the loop",
        "four",
        "a four has an open corner instead of a round head",
    ),
}

_SUMMARY = (
    "I will look at the strokes and loops of the handwritten digit, describe them, "
    "compare them with the candidate digits, check the argument, and name the digit."
)


def _article(word: str) -> str:
    return f"an {word}" if word[0] in "aei" else f"a {word}"


def domain_angle(domain: str) -> int:
    """The rotation of a RotatedDigits domain in degrees (``"rot30"`` -> 30)."""
    benchmark = get_benchmark(EMBEDDED_BENCHMARK)
    return int(benchmark.domain(domain).removeprefix("rot"))


def template_chain(class_name: str) -> str:
    """The rendered five-stage template chain of a digit class (the same for every domain).

    Raises:
        ValueError: if ``class_name`` is not one of the digit classes.
    """
    if class_name not in _DIGIT_CUES:
        raise ValueError(f"No template cues for class {class_name!r}. Valid classes: {', '.join(_DIGIT_CUES)}.")
    first, second, confuser, difference = _DIGIT_CUES[class_name]
    return render_chain(
        _SUMMARY,
        f"A single handwritten digit drawn in light strokes on a dark background; it shows {first} and {second}.",
        f"The digit has {first}. It also has {second}. These two features together fit {_article(class_name)}. "
        f"The closest alternative is {_article(confuser)}, but {difference}, and this digit does not look like that.",
        f"The cues hold whatever the orientation of the image: {first} and {second} keep their shape when the "
        f"digit is turned, so the answer does not depend on the rotation. The {confuser} is ruled out.",
        class_name,
    )


def _render_digit(pixels: np.ndarray, angle: int) -> bytes:
    """8x8 grey levels 0..16 -> rotated 32x32 RGB PNG bytes (light strokes on dark)."""
    grey = Image.fromarray(np.clip(pixels * 16, 0, 255).astype(np.uint8), mode="L")
    grey = grey.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
    if angle:
        grey = grey.rotate(angle, resample=Image.Resampling.BILINEAR, fillcolor=0)
    buffer = io.BytesIO()
    grey.convert("RGB").save(buffer, format="PNG", optimize=False, compress_level=6)
    return buffer.getvalue()


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits: (images 1797x8x8 grey levels 0..16, targets 0..9).

    Reads the CSV file scikit-learn ships (what ``load_digits`` reads) without importing
    ``sklearn.datasets`` (seconds of imports); falls back to ``load_digits`` otherwise.
    """
    spec = importlib.util.find_spec("sklearn")
    locations = list(spec.submodule_search_locations or []) if spec else []
    path = Path(locations[0], "datasets", "data", "digits.csv.gz") if locations else None
    if path is not None and path.is_file():
        table = np.loadtxt(path, delimiter=",")
        return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(int)
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.images, digits.target


@functools.lru_cache(maxsize=2)
def _embedded_images(seed: int) -> tuple[SourceImage, ...]:
    benchmark = get_benchmark(EMBEDDED_BENCHMARK)
    pixels, targets = load_digits_arrays()
    order = np.random.default_rng(seed).permutation(len(targets))
    images: list[SourceImage] = []
    for domain, indices in zip(benchmark.domains, np.array_split(order, len(benchmark.domains))):
        angle = domain_angle(domain)
        for index in sorted(int(i) for i in indices):
            label = int(targets[index])
            images.append(
                SourceImage(
                    image_id=f"{domain}/{benchmark.classes[label]}/{index:05d}.png",
                    domain=domain,
                    label=label,
                    data=_render_digit(pixels[index], angle),
                )
            )
    return tuple(images)


def embedded_source_images(seed: int = EMBEDDED_SEED) -> list[SourceImage]:
    """Every RotatedDigits image (1,797), domain by domain, with PNG bytes in ``data``.

    The domains are disjoint quarters of a seeded permutation; ``image_id`` is
    ``"<domain>/<class>/<index in load_digits, 5 digits>.png"``, e.g. ``"rot30/seven/00042.png"``.
    Made once per process (about 2 MB) and reused.
    """
    return list(_embedded_images(seed))


def embedded_chains(
    images: Sequence[SourceImage], benchmark: Benchmark | str = EMBEDDED_BENCHMARK
) -> Mapping[str, ChainRecord]:
    """Template chains for images of the embedded benchmark, keyed by ``image_id``."""
    benchmark = get_benchmark(benchmark)
    by_class = {
        name: ChainRecord(
            reasoning=template_chain(name),
            chain_source=TEMPLATE_CHAIN_SOURCE,
            prompt_version=PROMPT_VERSION,
        )
        for name in benchmark.class_names
    }
    return {image.image_id: by_class[benchmark.class_names[image.label]] for image in images}
