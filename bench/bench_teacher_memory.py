"""Teacher memory: peak memory of a build of 2,000 images vs 200 images (images streamed from paths).

Each size runs in a fresh process against the same loopback teacher (a process of its
own); the peak is measured with ``tracemalloc`` (Python allocations from before the image
list is made until every chain record was read back, as the dataset builder does; a
one-image warm-up build first loads the modules the client imports lazily, so that code
objects are not counted as data) and as the process's peak RSS. The input list of
:class:`SourceImage` (ids and paths, no pixels) belongs to the caller and grows with the
image count by design; the figure "teacher" is the peak on top of it.

    python bench/bench_teacher_memory.py [--small 200] [--large 2000] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import tracemalloc
from pathlib import Path

from teacher_bench_utils import BENCHMARK, teacher_server, write_images


def child(count: int, images_dir: Path, base_url: str, concurrency: int, store: Path) -> None:
    """One build of ``count`` images; prints its peaks as JSON."""
    from rdmldg_hf.data.schema import SourceImage
    from rdmldg_hf.teacher.pipeline import generate_chains
    from rdmldg_hf.teacher.settings import SamplingSettings, TeacherSettings

    settings = TeacherSettings(
        sampling=SamplingSettings(model="bench-teacher", candidates=4, image_max_side=96),
        base_url=base_url,
        concurrency=concurrency,
        max_rounds=0,
        progress=False,
    )
    first = next(images_dir.rglob("*.png"))
    warm_up = SourceImage("warm-up.png", BENCHMARK.domains[0], 0, str(first))
    generate_chains([warm_up], BENCHMARK, settings, store / "warm-up").close()

    tracemalloc.start()
    paths = sorted(str(path.relative_to(images_dir)) for path in images_dir.rglob("*.png"))[:count]
    images = []
    for relative in paths:
        domain, class_name, _ = relative.split("/")
        images.append(
            SourceImage(
                relative, BENCHMARK.domain(domain), BENCHMARK.class_index(class_name), str(images_dir / relative)
            )
        )
    del paths
    listed, _ = tracemalloc.get_traced_memory()  # the builder's input: ids and paths, no pixels
    tracemalloc.reset_peak()
    chains = generate_chains(images, BENCHMARK, settings, store / "build")
    with_chain = sum(chains[image.image_id].reasoning is not None for image in images)
    _, peak = tracemalloc.get_traced_memory()
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "images": len(images),
                "with_chain": with_chain,
                "requests": chains.summary["this_run"]["requests"],
                "tracemalloc_peak": peak,
                "teacher_peak": peak - listed,
                "rss_peak": rss_kib * 1024,
            }
        )
    )


def measure(count: int, images_dir: Path, base_url: str, concurrency: int, store: Path) -> dict:
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            str(count),
            "--images-dir",
            str(images_dir),
            "--base-url",
            base_url,
            "--concurrency",
            str(concurrency),
            "--store",
            str(store),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=200)
    parser.add_argument("--large", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--images-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    parser.add_argument("--store", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.images_dir, args.base_url, args.concurrency, args.store)
        return
    with tempfile.TemporaryDirectory() as tmp, teacher_server(0.0) as base_url:
        root = Path(tmp)
        write_images(root / "images", args.large, size=96)
        results = {}
        for count in (args.small, args.large):
            results[count] = result = measure(
                count, root / "images", base_url, args.concurrency, root / f"store-{count}"
            )
            assert result["images"] == result["requests"] == count, result
            print(
                f"{count:>5} images: tracemalloc peak {result['tracemalloc_peak'] / 2**20:6.2f} MiB "
                f"(teacher {result['teacher_peak'] / 2**20:5.2f} MiB + image list), RSS peak "
                f"{result['rss_peak'] / 2**20:6.1f} MiB"
            )
    small, large = results[args.small], results[args.large]
    for key, name in (
        ("tracemalloc_peak", "tracemalloc, image list included"),
        ("teacher_peak", "tracemalloc, teacher on top of the image list"),
        ("rss_peak", "RSS"),
    ):
        print(f"ratio {args.large} / {args.small} images ({name}): {large[key] / small[key]:.2f}x (target <= 1.3x)")


if __name__ == "__main__":
    main()
