"""python -m uninext_paddle.summary: paddle.summary's table and a real FLOPs figure."""
from __future__ import annotations

import subprocess
import sys

import uninext_paddle as up
from tests.conftest import ROOT, TINY
from uninext_paddle.summary import attention_macs, layer_macs


def test_attention_macs_count_the_padded_windows():
    model = up.UniNeXt(num_classes=10, **TINY)  # dims 16/32/64/128, stage 3 with 2 blocks
    # Two [49, 49] x [49, head_dim] products per head and window: 2 * 49^2 MACs per channel and window.
    per_channel = 2 * 49 * 49
    # 56x56 input: maps 14, 7, 4, 2: four unpadded windows, then one (exact), one and one (padded).
    assert attention_macs(model, 56) == per_channel * (4 * 16 + 32 + 2 * 64 + 128)
    # 64x64 input: maps 16, 8, 4, 2, padded to 21 (9 windows), 14 (4 windows), 7 and 7.
    assert attention_macs(model, 64) == per_channel * (9 * 16 + 4 * 32 + 2 * 64 + 128)


def test_layer_macs_are_real_and_grow_with_the_image():
    model = up.UniNeXt(num_classes=10, **TINY)
    small, large = layer_macs(model, 32), layer_macs(model, 64)
    assert small > 0 and 3.5 * small < large < 4.5 * small


def test_summary_cli_prints_the_table_and_the_figure():
    out = subprocess.run([sys.executable, "-m", "uninext_paddle.summary", "--variant", "T"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    assert "Total params: 23,021,386" in out
    assert "MACs at 224x224: 4.268 G in layers (paddle.flops) + 0.152 G in attention matmuls = 4.420 G" in out
    bad = subprocess.run([sys.executable, "-m", "uninext_paddle.summary", "--variant", "XL"], cwd=ROOT,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr and "Traceback" not in bad.stderr
