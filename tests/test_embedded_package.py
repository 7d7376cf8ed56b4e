"""rdmldg_hf.embedded: the embedded default's benchmark and tiny-model factory, re-exported (the same objects) by
rdmldg_hf.testing and by the paths they had before."""

import subprocess
import sys

import pytest

import rdmldg_hf.embedded as embedded
import rdmldg_hf.testing as testing

FACTORY = ("ARCHITECTURES", "TINY_PRESETS", "TinyModelSpec", "build_tiny_model", "llava_from_language_model")


def test_every_documented_name_resolves():
    assert all(getattr(embedded, name) is not None for name in embedded.__all__)
    assert set(embedded.__all__) <= set(dir(embedded))
    with pytest.raises(AttributeError, match="has no attribute 'build_tiny_models'"):
        embedded.build_tiny_models


def test_testing_and_the_former_paths_re_export_the_same_objects():
    from rdmldg_hf.data import embedded as data_embedded
    from rdmldg_hf.testing import tiny_models as testing_tiny_models

    for name in FACTORY + ("train_tokenizer", "project_corpus", "chat_template"):
        assert getattr(testing, name) is getattr(embedded, name) is getattr(testing_tiny_models, name), name
    for name in ("embedded_source_images", "embedded_chains", "template_chain", "domain_angle", "load_digits_arrays"):
        assert getattr(data_embedded, name) is getattr(embedded, name), name


def test_the_benchmark_comes_without_transformers():
    code = (
        "import sys; from rdmldg_hf.embedded import embedded_source_images, template_chain;"
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
