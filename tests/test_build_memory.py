"""A build streams images: it never holds every image in memory at once."""

import tracemalloc

import numpy as np
from PIL import Image

from rdmldg_hf.benchmarks import get_benchmark
from rdmldg_hf.data.build import build_dataset
from rdmldg_hf.data.domainbed import scan_domainbed

VLCS = get_benchmark("vlcs")


def test_peak_python_memory_stays_well_below_the_image_bytes(tmp_path):
    rng = np.random.default_rng(0)
    total = 0
    for domain in VLCS.domain_folders:
        folder = tmp_path / "VLCS" / domain / "car"
        folder.mkdir(parents=True)
        for index in range(150):  # incompressible noise: ~12 KB per PNG
            path = folder / f"{index:03d}.png"
            Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path, compress_level=1)
            total += path.stat().st_size
    images = scan_domainbed(VLCS, tmp_path).images
    assert all(image.data is None for image in images)  # paths, not bytes
    build_dataset("vlcs", tmp_path / "warm-up", images=images[::150])  # one-time imports and caches
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        summary = build_dataset("vlcs", tmp_path / "out", images=tmp_path, max_shard_size="1MB")
        peak = tracemalloc.get_traced_memory()[1] - start
    finally:
        tracemalloc.stop()
    assert summary.config.rows == 600 and len(summary.config.splits[0].files) > 1
    # At most one domain's rows at a time (push_to_hub's size estimate reads up to 1,000 rows).
    assert peak < 0.4 * total, (peak, total)
