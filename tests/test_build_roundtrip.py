"""Property: whatever images and chain records go in come back out of the built folder."""

import tempfile

from datasets import load_dataset
from hypothesis import given, settings
from hypothesis import strategies as st

from rdmldg_hf.data.build import build_dataset
from rdmldg_hf.data.schema import ChainRecord
from rdmldg_hf.embedded import embedded_source_images

IMAGES = embedded_source_images()[::7]

records = st.builds(
    ChainRecord,
    reasoning=st.one_of(st.none(), st.text(max_size=40)),
    chain_source=st.one_of(st.none(), st.sampled_from(["gpt-4o", "template", "m@sarr-r2"])),
    prompt_version=st.one_of(st.none(), st.just("v1")),
    num_candidates=st.one_of(st.none(), st.integers(0, 8)),
    num_valid=st.one_of(st.none(), st.integers(0, 8)),
    num_correct=st.one_of(st.none(), st.integers(0, 8)),
    rejection_reasons=st.lists(st.text(max_size=12), max_size=3).map(tuple),
)


@settings(max_examples=6, deadline=None)
@given(
    picked=st.lists(st.sampled_from(IMAGES), min_size=1, max_size=10, unique_by=lambda i: i.image_id),
    chains=st.lists(records, min_size=10, max_size=10),
)
def test_rows_and_chain_columns_round_trip(picked, chains):
    given_chains = {image.image_id: record for image, record in zip(picked, chains)}
    with tempfile.TemporaryDirectory() as tmp:
        summary = build_dataset("rotdigits", tmp + "/ds", images=picked, chains=given_chains)
        loaded = load_dataset(tmp + "/ds", "rotdigits")
        rows = {row["image_id"]: row for split in loaded.values() for row in split}
    assert sum(summary.rows_per_domain.values()) == len(picked) == len(rows)
    for image in picked:
        row = rows[image.image_id]
        assert (row["label"], row["domain"]) == (image.label, image.domain)
        expected = given_chains[image.image_id].columns()
        assert {key: row[key] for key in expected} == expected
