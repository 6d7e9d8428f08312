"""What a training run does once before its first epoch, and where that set-up time goes.

`start(trainer)`: resume or initialise from a checkpoint, make the run folder, open TensorBoard, wait for
the Triton kernels compiled ahead in other processes (`hstu_tutorial.precompile`), capture the training
step and the per-epoch evaluation as CUDA graphs. `add_compile_time(trainer, t0, tune0)`: count the seconds
since `t0`, less tile tuning, as the run's compile time (the results line splits set-up into data, compile
and tune).
"""

from __future__ import annotations

import time

import torch

from hstu_tutorial import precompile
from hstu_tutorial.training import checkpoints, report
from hstu_tutorial.training.log import note


def start(trainer) -> None:
    """Before the first epoch of this call to `fit`: resume, run folder, TensorBoard, CUDA graph."""
    cfg = trainer.cfg
    resumed = checkpoints.resume_or_init(trainer)  # cfg.resume / cfg.init_from, checked before any write
    # The run folder is made only now, once setup and the checkpoint checks succeeded.
    if trainer.run_dir is None:
        trainer.run_dir = trainer._make_run_dir()
    trainer.run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.tensorboard and trainer.writer is None:
        # On resume, events of the lost epochs (step >= trainer.epoch) written before the kill are dropped.
        trainer.writer = report.open_tensorboard(
            trainer.run_dir, purge_step=trainer.epoch if resumed else None
        )
    if trainer.verbose:
        n_params = sum(p.numel() for p in trainer.model.parameters())
        note(
            f"{cfg.model} ({n_params:,} parameters, attention={trainer.attention_impl}) on {trainer.device}, "
            f"layout={trainer.layout}, cuda_graphs={'on' if trainer.use_graphs else 'off'}, "
            f"bf16={cfg.bf16}, tf32={cfg.tf32}; logs in {trainer.run_dir}"
        )
    waited = precompile.wait()  # kernels compiled in other processes (python -m hstu_tutorial.train)
    if waited is not None and trainer.verbose:
        state = "ready" if waited["ok"] else f"partly ready ({waited['error'] or 'a worker failed'})"
        note(
            f"Triton kernels compiled ahead in parallel processes: {state}, {waited['seconds']:.1f} s after start"
        )
    if trainer.use_graphs and trainer.graph is None:
        t0, tune0 = time.perf_counter(), report.tuning_seconds()
        try:
            trainer.capture_graph()
        except Exception as err:  # noqa: BLE001 - fall back to eager steps, loudly
            if cfg.cuda_graphs == "on":
                raise
            note(f"CUDA graph capture failed ({type(err).__name__}: {err}); running eager steps")
            trainer.use_graphs, trainer.graph = False, None
            trainer.optimizer.zero_grad(set_to_none=True)
        trainer.setup_s += time.perf_counter() - t0
        add_compile_time(trainer, t0, tune0)
    if trainer.use_graphs and trainer._eval_graphs is not None and not trainer._eval_graphs.graphs:
        t0, tune0 = time.perf_counter(), report.tuning_seconds()
        trainer.capture_evaluation()  # its warm-up and capture are set-up too, as the step's are
        trainer.setup_s += time.perf_counter() - t0
        add_compile_time(trainer, t0, tune0)


def add_compile_time(trainer, t0: float, tune0: float) -> None:
    """Count the time since `t0` (the first step(s), where kernels compile), less tuning, as compile."""
    if trainer.device.type == "cuda":
        torch.cuda.synchronize(trainer.device)
    tuning = report.tuning_seconds() - tune0
    trainer.setup_split["compile_s"] += max(0.0, time.perf_counter() - t0 - tuning)
