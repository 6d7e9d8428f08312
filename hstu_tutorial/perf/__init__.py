"""Performance measurement: the code behind the benchmarks in `benchmarks/` and notebooks 07 and 08.

`measure` (timing, memory, machine, result files and tables, a random `JaggedBatch`), `startup` (where a
command's first seconds go, from a `benchmarks/trace_setup.py` timeline), `trainer_runs`
(the trainer measured step by step and epoch by epoch, the data-loading profile), `levers` (one table of
every speed/memory lever) and `scaling` (time and memory against sequence length and depth). `graph_streams`
(CUDA graphs replayed at once: do they disturb each other's GEMMs?) needs a GPU and is imported by name.
"""

from hstu_tutorial.perf import levers, scaling
from hstu_tutorial.perf.levers import CPU_ROWS, GPU_ROWS, run_levers
from hstu_tutorial.perf.measure import (
    MIB,
    machine_info,
    machine_tag,
    markdown_table,
    peak_mib,
    random_jagged_batch,
    reset_peak,
    results_folder,
    save_results,
    state_mib,
    sync,
    time_call,
)
from hstu_tutorial.perf.scaling import fit_terms, measure_point, run_scaling
from hstu_tutorial.perf.startup import PHASES, read_trace, startup_phases
from hstu_tutorial.perf.trainer_runs import (
    TrainerEpochs,
    lever_config,
    lever_dataset,
    measure_trainer,
    profile_loading,
)

# The module names notebook 07 used when these lived in benchmarks/ (`bench_levers.to_markdown(...)`).
bench_levers = levers
bench_scaling = scaling

__all__ = [
    "PHASES",
    "read_trace",
    "startup_phases",
    "CPU_ROWS",
    "GPU_ROWS",
    "MIB",
    "TrainerEpochs",
    "bench_levers",
    "bench_scaling",
    "fit_terms",
    "lever_config",
    "lever_dataset",
    "levers",
    "machine_info",
    "machine_tag",
    "markdown_table",
    "measure_point",
    "measure_trainer",
    "peak_mib",
    "profile_loading",
    "random_jagged_batch",
    "reset_peak",
    "results_folder",
    "run_levers",
    "run_scaling",
    "save_results",
    "scaling",
    "state_mib",
    "sync",
    "time_call",
]
