"""hstu_tutorial.perf.startup and viz.plot_startup: the phases of a trace_setup.py timeline add up to the run."""

from pathlib import Path

import pytest

from hstu_tutorial import viz
from hstu_tutorial.perf import PHASES, read_trace, startup_phases

PERF = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "h200_2026-12-01" / "perf"

TRACE = """| start s | seconds | what |
|---|---|---|
| 0.00 | 0.05 | python start-up until this script runs |
| 0.05 | 3.00 | import torch |
| 3.50 | 20.00 | hstu-train --config x (exit 0) |
| 3.50 | 2.00 | Trainer.__init__ |
| 5.60 | 17.00 | fit (all epochs) |
| 5.60 | 6.00 | Trainer._start |
| 6.00 | 5.00 | Trainer.capture_graph |
| 6.50 | 1.50 | triton compile hstu_fwd_kernel |
| 8.50 | 2.00 | triton compile hstu_bwd_dq_kernel |
| 12.00 | 0.40 | triton compile layer_norm_fwd_kernel |

Triton compiles: 3, 3.90 s in all. Process start to end: 23.00 s. TRITON_CACHE_DIR=x
"""


def test_phases_of_a_small_timeline(tmp_path):
    path = tmp_path / "trace_setup.md"
    path.write_text(TRACE)
    events, total = read_trace(path)
    assert total == 23.0 and len(events) == 10
    phases = startup_phases(events, total)
    assert list(phases) == list(PHASES)
    assert phases["imports"] == pytest.approx(3.5)
    assert phases["trainer set-up"] == pytest.approx(2.1)  # 2.0 s plus the 0.1 s before the loop starts
    assert phases["before capture"] == pytest.approx(0.4)
    assert phases["kernel compiles"] == pytest.approx(3.5)  # the compile at 12.0 s is after the capture
    assert phases["capture, rest"] == pytest.approx(1.5)
    assert phases["epochs"] == pytest.approx(22.6 - 11.0)
    assert sum(phases.values()) == pytest.approx(total)


def test_a_file_that_is_not_a_timeline_is_refused(tmp_path):
    path = tmp_path / "x.md"
    path.write_text("# something else\n")
    with pytest.raises(ValueError, match="not a benchmarks/trace_setup.py timeline"):
        read_trace(path)
    path.write_text(TRACE.replace("| 3.50 | 2.00 | Trainer.__init__ |\n", ""))
    with pytest.raises(ValueError, match="Trainer.__init__"):
        startup_phases(*read_trace(path))


@pytest.mark.parametrize(
    "name", ["trace_setup_before.md", "trace_setup_after.md", "trace_setup_rel_bias_auto.md"]
)
def test_committed_timelines_add_up(name):
    events, total = read_trace(PERF / name)
    phases = startup_phases(events, total)
    assert sum(phases.values()) == pytest.approx(total, abs=0.05)
    assert all(v >= 0 for v in phases.values())


def test_plot_startup_draws_one_bar_per_run():
    runs = {
        name: startup_phases(*read_trace(PERF / f"trace_setup_{name}.md")) for name in ("before", "after")
    }
    fig, data = viz.plot_startup(runs)
    assert data["labels"] == ["before", "after"] and data["phases"] == list(PHASES)
    assert [sum(row) for row in data["seconds"]] == pytest.approx([sum(runs[k].values()) for k in runs])
    assert len(fig.axes[0].patches) == 2 * len(PHASES)
