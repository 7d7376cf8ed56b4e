"""rdmldg_hf.testing: every documented stand-in resolves, and the loopback servers come without the model stack."""

import subprocess
import sys

import pytest

import rdmldg_hf.testing as testing


def test_every_documented_name_resolves():
    assert all(getattr(testing, name) is not None for name in testing.__all__)
    assert set(testing.__all__) <= set(dir(testing))
    with pytest.raises(AttributeError, match="has no attribute 'LoopbackServers'"):
        testing.LoopbackServers


def test_loopback_servers_import_neither_torch_nor_transformers():
    code = (
        "import sys; from rdmldg_hf.testing import LoopbackBatchServer, LoopbackServer, oversized_png;"
        "print(sorted(m for m in ('torch', 'transformers', 'datasets') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
