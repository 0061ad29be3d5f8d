"""The committed notebook reference (tests/notebook/notebook_model.py) is the seed's code, unchanged."""
from __future__ import annotations

import pytest

from tests.notebook import extract


def test_notebook_reference_is_current():
    if not extract.DEFAULT_SEED.exists():
        pytest.skip(f"seed not found at {extract.DEFAULT_SEED}")
    expected = extract.extract(extract.DEFAULT_SEED.read_text(encoding="utf-8"))
    assert extract.TARGET.read_text(encoding="utf-8") == expected
    assert "class UniNeXt(nn.Layer)" in expected and "def drop_path(" in expected
