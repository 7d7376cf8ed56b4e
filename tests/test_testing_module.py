"""rdmldg_hf.testing and rdmldg_hf.embedded: every documented name resolves, light parts come without the model
stack, and testing (and the paths of earlier versions) re-export the embedded default's factory, the same objects."""

import subprocess
import sys

import pytest

import rdmldg_hf.embedded as embedded
import rdmldg_hf.testing as testing


@pytest.mark.parametrize("package, typo", [(testing, "LoopbackServers"), (embedded, "build_tiny_models")])
def test_every_documented_name_resolves(package, typo):
    assert all(getattr(package, name) is not None for name in package.__all__)
    assert set(package.__all__) <= set(dir(package))
    with pytest.raises(AttributeError, match=f"has no attribute '{typo}'"):
        getattr(package, typo)


@pytest.mark.parametrize(
    "statement",
    [
        "from rdmldg_hf.testing import LoopbackBatchServer, LoopbackServer, oversized_png",
        "from rdmldg_hf.embedded import embedded_source_images, template_chain",  # the benchmark, not the models
    ],
)
@pytest.mark.multiprocess
def test_light_parts_import_neither_torch_nor_transformers(statement):
    code = f"import sys; {statement}; print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.multiprocess
def test_loopback_servers_import_no_datasets():
    code = "import sys; from rdmldg_hf.testing import LoopbackServer; print('datasets' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_testing_and_the_former_paths_re_export_the_same_objects():
    from rdmldg_hf.data import embedded as data_embedded
    from rdmldg_hf.testing import tiny_models as testing_tiny_models

    factory = ("ARCHITECTURES", "TINY_PRESETS", "TinyModelSpec", "build_tiny_model", "llava_from_language_model")
    for name in factory + ("train_tokenizer", "project_corpus", "chat_template"):
        assert getattr(testing, name) is getattr(embedded, name) is getattr(testing_tiny_models, name), name
    for name in ("embedded_source_images", "embedded_chains", "template_chain", "domain_angle", "load_digits_arrays"):
        assert getattr(data_embedded, name) is getattr(embedded, name), name
