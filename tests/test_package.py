"""Importing uninext_paddle has no process-wide effects: no warning filters, environment or Paddle flags."""
from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT

# Paddle is imported first, so whatever it sets itself is in the "before" state.
PROBE = """
import os, warnings
import paddle
flags = ["FLAGS_use_stride_kernel", "FLAGS_use_mkldnn"]
before = (list(warnings.filters), dict(os.environ), paddle.get_flags(flags), paddle.get_device())
import uninext_paddle
after = (list(warnings.filters), dict(os.environ), paddle.get_flags(flags), paddle.get_device())
print("unchanged" if after == before else f"changed: {before} -> {after}")
"""


def test_import_changes_no_warning_filter_environment_or_flag():
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "unchanged", out.stdout
