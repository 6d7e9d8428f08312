"""benchmarks/bench_sasrec_output.py on the CPU (--smoke): every row is measured and written, a tile sweep adds
its rows, and the module's tile settings are restored afterwards. No timing checks."""

import json

import torch

from benchmarks import bench_sasrec_output as bso
from hstu_tutorial.ops.triton import sasrec_output as so


def test_smoke_rows_and_tiles_restored(tmp_path):
    before = (so.GPU_FWD_TILE, so.GPU_BWD_TILE, so.GPU_BWD_PROGRAMS_PER_SM)
    tf32 = torch.backends.cuda.matmul.allow_tf32
    assert (
        bso.main(["--smoke", "--iters", "1", "--tiles", "32x8", "--programs", "2", "--out", str(tmp_path)])
        == 0
    )
    rows = json.loads((tmp_path / "bench_sasrec_output.json").read_text())["rows"]
    assert [r["variant"].split(",")[0] for r in rows] == [
        "spelled out (nn.Linear",
        "fused (shipped)",
        "fused",
    ]
    assert all(r["fwd"] > 0 and r["fwd+bwd"] > 0 and "error" not in r for r in rows)
    assert "(32, 8)" in rows[2]["variant"] and "<= 2 per multiprocessor" in rows[2]["variant"]
    assert (so.GPU_FWD_TILE, so.GPU_BWD_TILE, so.GPU_BWD_PROGRAMS_PER_SM) == before
    assert (
        torch.backends.cuda.matmul.allow_tf32 == tf32
    )  # process-wide: other tests' dot precision depends on it
    assert "| fused (shipped)" in (tmp_path / "bench_sasrec_output.md").read_text()
