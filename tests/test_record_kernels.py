"""benchmarks/record_kernels.py's staleness verdict (the recording itself needs a GPU)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from record_kernels import stale_configs  # noqa: E402

FWD = {"kernel": "hstu_tutorial.ops.triton.k.hstu_fwd_kernel", "data": "a"}
BWD = {"kernel": "hstu_tutorial.ops.triton.k.hstu_bwd_kernel", "data": "b"}
LN = {"kernel": "hstu_tutorial.ops.triton.layer_norm.layer_norm_fwd_kernel", "data": "c"}


def table(runs, triton="3.6.0"):
    return {"triton": triton, "runs": runs}


def test_same_recording_is_current():
    runs = {"hstu": [FWD, BWD], "sasrec": [LN]}
    assert stale_configs(table(runs), table({k: list(v) for k, v in runs.items()})) == {}


def test_every_kind_of_difference_is_stale():
    shipped = table({"hstu": [FWD, BWD], "sasrec": [LN]})
    new_bwd = dict(BWD, data="b with a width divisible by 16")
    got = stale_configs(shipped, table({"hstu": [FWD, new_bwd], "sasrec": [LN]}))
    assert list(got) == ["hstu"] and "hstu_bwd_kernel" in got["hstu"] and "hstu_fwd_kernel" not in got["hstu"]
    assert (
        "hstu_fwd_kernel" in stale_configs(shipped, table({"hstu": [BWD], "sasrec": [LN]}))["hstu"]
    )  # one fewer
    assert (
        "layer_norm_fwd_kernel" in stale_configs(shipped, table({"hstu": [FWD, BWD, LN]}))["hstu"]
    )  # one more
    assert stale_configs(shipped, table({"large": [FWD]})) == {"large": "not in the table"}
    assert stale_configs(None, table({"hstu": [FWD]})) == {"hstu": "no table"}
    assert "Triton" in stale_configs(shipped, table({"hstu": [FWD, BWD]}, triton="3.7.1"))["hstu"]
