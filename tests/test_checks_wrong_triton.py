"""The Triton forward check against interpreted kernels: a kernel that loads key tiles lying entirely in the
future fails by name, also when its values are right; correct kernels pass whatever their block shapes
(a diagonal tile wider than the query block is loaded and masked, and that is fine)."""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before any @triton.jit below

triton = pytest.importorskip("triton")
tl = pytest.importorskip("triton.language")

from check_helpers import _progress_file  # noqa: E402, F401 (an autouse fixture)
from learner_triton_forward import fwd  # noqa: E402

from hstu_tutorial import checks  # noqa: E402

interpreted = pytest.mark.skipif(
    os.environ.get("TRITON_INTERPRET", "0") in ("", "0"),
    reason="the load recorder needs the Triton interpreter",
)


@interpreted
def test_a_kernel_without_causal_tile_skipping_fails_by_name():
    ok = checks.check_triton_hstu_forward(fwd(skip=False))
    assert not ok
    assert "no causal tile skipping" in checks.last_report, checks.last_report
    assert "hi = tl.minimum(length, (block_m + 1) * BLOCK_M)" in checks.last_report


@pytest.mark.parametrize("block_m, block_n", [(32, 32), (16, 64), (64, 16), (128, 32)])
def test_tile_skipping_kernels_pass_with_any_block_shape(block_m, block_n):
    # (16, 64): the diagonal tile reaches 48 rows past the query block; it is loaded and masked, not skipped
    assert checks.check_triton_hstu_forward(fwd(block_m, block_n)), checks.last_report


def test_masking_future_loads_instead_of_ending_the_loop_is_not_a_load():
    assert checks.check_triton_hstu_forward(fwd(skip=False, key_masked_loads=True)), checks.last_report


def test_minus_inf_before_silu_in_a_kernel_is_named():
    ok = checks.check_triton_hstu_forward(fwd(neg_inf=True))
    assert not ok
    assert "NaN" in checks.last_report and "SiLU(-inf)" in checks.last_report, checks.last_report
