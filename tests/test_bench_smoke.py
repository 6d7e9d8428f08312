"""benchmarks/bench_hardware.py and bench_layers.py on the CPU (--smoke): they run, save JSON + Markdown,
read them back, and the figures they derive (fits, ratios, jagged attention) are right. No timing checks."""

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_hardware  # noqa: E402
import bench_layers  # noqa: E402


def test_hardware_smoke_writes_cases_and_table(tmp_path, capsys):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small kernels: one thread is faster on a shared machine
    try:
        rc = bench_hardware.main(
            ["--smoke", "--models", "HSTU", "--settings", "default,recompute", "--out", str(tmp_path)]
        )
    finally:
        torch.set_num_threads(threads)
    assert rc == 0
    payload = json.loads((tmp_path / "hardware.json").read_text())
    cases = payload["cases"]
    assert {c["group"] for c in cases} == {"settings", "sweep", "long"}
    assert all(c["status"] == "ok" for c in cases), [c["status"] for c in cases]
    for c in cases:
        assert c["train_s_per_epoch"] > 0 and c["eval_s"] > 0 and len(c["train_epoch_s"]) == payload["epochs"]
        assert c["peak_reserved_mib"] is None  # a CPU has no allocator statistics
        assert set(c["fits"]) == {"8", "12", "24"} and all(v is None for v in c["fits"].values())
    recompute = [c for c in cases if c["setting"] == "recompute"]
    assert recompute and all(c["recompute"] and not c["cuda_graphs"] for c in recompute)
    capsys.readouterr()
    assert bench_hardware.main(["--table-from", str(tmp_path / "hardware.json")]) == 0
    table = capsys.readouterr().out
    assert table == (tmp_path / "hardware.md").read_text()
    assert (
        "## The troubleshooting settings" in table
        and "| HSTU | synthetic:ci | 20 | 128 | recompute |" in table
    )


def test_hardware_fit_columns_add_the_measured_overhead():
    case = {"peak_reserved_mib": 7000.0, "left_over_reserved_mib": 100.0}
    assert bench_hardware.needed_mib(case, 600.0) == pytest.approx(7500.0)
    assert bench_hardware.fits(case, 600.0) == {"8": True, "12": True, "24": True}
    big = {"peak_reserved_mib": 8000.0, "left_over_reserved_mib": 0.0}
    assert bench_hardware.fits(big, 600.0) == {"8": False, "12": True, "24": True}
    assert bench_hardware.fits(big, None) == {"8": None, "12": None, "24": None}  # no overhead: no verdict
    row = dict(
        big,
        group="settings",
        model="HSTU",
        data="ml-1m",
        N=200,
        batch_size=128,
        setting="default",
        status="ok",
        cuda_graphs=True,
        train_s_per_epoch=0.1,
        eval_s=0.05,
    )
    payload = {
        "machine": {"device": "GPU", "date_utc": "2026-12-01 00:00 UTC", "torch": "x"},
        "data": "d",
        "autotune": False,
        "epochs": 2,
        "overhead": {"outside_allocator_mib": 600.0, "context_mib": 500.0, "before_source": "nvidia-smi"},
        "cases": [row],
    }
    md = bench_hardware.to_markdown(payload)
    assert "| HSTU | ml-1m | 200 | 128 | default | graph | 0.100 | 0.050 |" in md
    assert "| 7.81 | 8.40 | no | yes | yes |" in md  # reserved 8000 MiB; (8000 + 600) / 1024 GiB needed


def test_layers_smoke_rows_ratios_and_table(tmp_path, capsys):
    assert bench_layers.main(["--smoke", "--out", str(tmp_path)]) == 0
    payload = json.loads((tmp_path / "layers.json").read_text())
    rows = payload["rows"]
    assert all(r["status"] == "ok" and r["finite"] for r in rows)
    assert {r["layer"] for r in rows} == {"transformer", "stu_rab", "stu"}
    for case in {r["case"] for r in rows}:  # the same tokens for every layer of a case
        assert len({r["tokens"] for r in rows if r["case"] == case}) == 1
    tf = {r["case"]: r for r in rows if r["layer"] == "transformer"}
    assert all(r["attention_check_rel_err"] < 1e-4 for r in tf.values())  # fp32 on a CPU
    assert len(payload["ratios"]) == 2 * len(tf)
    for q in payload["ratios"]:
        assert q["ratio"] == pytest.approx(tf[q["case"]]["ms"] / q["stu_ms"])
    capsys.readouterr()
    assert bench_layers.main(["--table-from", str(tmp_path / "layers.json")]) == 0
    assert capsys.readouterr().out == (tmp_path / "layers.md").read_text()


def test_case_lengths_hold_the_token_budget():
    lengths = bench_layers.case_lengths(1024, 32768)
    assert lengths.min() >= 512 and lengths.max() <= 1024
    assert abs(int(lengths.sum()) - 32768) < 0.25 * 32768


def test_transformer_layer_on_a_jagged_batch_equals_one_sequence_at_a_time():
    from hstu_tutorial.ops.jagged_tensors import JaggedLayout
    from hstu_tutorial.perf.measure import random_jagged_batch

    torch.manual_seed(0)
    lengths = torch.tensor([5, 9, 3])
    batch = random_jagged_batch(lengths, 9)
    layout = JaggedLayout.from_batch(batch, 9)
    layer = bench_layers.TransformerLayer(16, 2, attention_path="padded").eval()
    x = torch.randn(int(lengths.sum()), 16)  # (T, D)
    out = layer(x, layout)  # (T, D)
    start = 0
    for n in lengths.tolist():  # each sequence alone: a batch of one, nothing to pad
        one = random_jagged_batch(torch.tensor([n]), n)
        alone = layer(x[start : start + n], JaggedLayout.from_batch(one, n))
        torch.testing.assert_close(out[start : start + n], alone, atol=1e-5, rtol=1e-5)
        start += n
