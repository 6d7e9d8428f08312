"""Training runs measured through the trainer itself: the lever data and config, epochs, steps, loading.

`measure_trainer` times the trainer's own step (eager, or the captured CUDA graph) so the figures are the
trainer's. Memory on a CPU, which has no allocator statistics, is an accounting: parameters + gradients +
AdamW state + the activations the forward pass keeps for the backward pass.
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys
import time

import torch

from hstu_tutorial.memory import SavedBytes
from hstu_tutorial.perf.measure import MIB, peak_mib, reset_peak, state_mib, sync, time_call
from hstu_tutorial.training import loss_rows


def lever_dataset(preset, verbose: bool = False):
    """The data every lever runs on: ML-1M users 1-2999 when present (full preset), else the synthetic set
    of ML-1M's size (full) or of CI size (small). Returns (dataset, description, base config name)."""
    from hstu_tutorial.data import get_reco_dataset

    if preset.name == "full":
        from hstu_tutorial.data import data_root
        from hstu_tutorial.data.movielens import has_ml1m_files

        # users 1-2999 only, not data/ml-1m: the published lever tables were measured on that subset
        folder = data_root() / "ml-1m-u2999"
        if has_ml1m_files(folder):
            ds = get_reco_dataset("ml-1m", 200, data_dir=folder, verbose=verbose)
            return ds, "ml-1m-u2999 (ML-1M users 1-2999)", {"dataset": "ml-1m", "data_dir": str(folder)}
        ds = get_reco_dataset("synthetic", 200, synthetic_size="ml-1m", verbose=verbose)
        return ds, "synthetic, ML-1M size", {"dataset": "synthetic", "synthetic_size": "ml-1m"}
    ds = get_reco_dataset(
        "synthetic", preset.max_seq_len, synthetic_size=preset.synthetic_size, verbose=verbose
    )
    return ds, f"synthetic ({preset.synthetic_size})", {"dataset": "synthetic"}


def lever_config(preset, data_keys: dict, **overrides):
    """The HSTU config the levers share (the paper's ML-1M HSTU; a small one on CPU) plus `overrides`
    (config keys, e.g. `autotune=False` for the default Triton tiles instead of tuned ones)."""
    from hstu_tutorial.train import load_config

    name = "ml-1m/hstu-sampled-softmax-n128-final" if preset.name == "full" else "synthetic/hstu-small"
    keys = dict(
        data_keys,
        tensorboard=False,
        progress=False,
        save_checkpoints=False,
        seed=0,
        protocol="reference",
        max_seq_len=200 if preset.name == "full" else preset.max_seq_len,
        autotune=True,
    )
    keys.update(overrides)
    return load_config(name, keys)


class TrainerEpochs:
    """Runs training epochs/steps of a `hstu_tutorial.train.Trainer` without evaluation or files.

    It drives the trainer's own step (eager step, or the captured CUDA graph) so the figures are the
    trainer's. `host_loader_workers` (int) replaces the device-resident batches by a torch DataLoader
    that builds batches on the host with that many worker processes (the data-loading lever).
    """

    def __init__(self, trainer, host_loader_workers: int | None = None, python_loop: bool = False):
        self.tr = trainer
        self.python_loop = python_loop
        self.device = trainer.device
        self.workers = host_loader_workers
        self._dl = None
        self.setup_s = 0.0
        self._supervised: list[int] | None = None
        if trainer.use_graphs and trainer.graph is None:
            t0 = time.perf_counter()
            trainer.capture_graph()
            self.setup_s = time.perf_counter() - t0
        self.num_steps = -(-trainer.splits["train"].num_users // trainer.cfg.batch_size)

    # -- the device-resident path (the trainer's) ----------------------------------------------------------
    def _order(self):
        tr = self.tr
        cpu_order = tr.epoch_order()
        order = cpu_order.to(self.device)
        totals = None
        if tr.layout == "jagged":
            totals = tr.splits["train"].batch_totals(order, tr.cfg.batch_size // tr.cfg.grad_accum_steps)
        self._supervised = None  # each step's supervised positions, as the trainer's epoch loop counts them
        if tr.graph is not None and tr.loss_rows is not None:
            self._supervised = loss_rows.split_step_counts(tr.train_rows, cpu_order, tr.cfg.batch_size)
        return order, totals

    def _step(self, order, totals, s):
        tr = self.tr
        B, k = tr.cfg.batch_size, tr.cfg.grad_accum_steps
        index = order[s * B : (s + 1) * B]  # (B,)
        part = None if totals is None else totals[s * k : (s + 1) * k]
        rows = None if self._supervised is None else self._supervised[s]
        return tr.step(index, part, supervised=rows)  # the captured CUDA graph's replay when there is one

    # -- the host-loader path -------------------------------------------------------------------------
    def _loader(self):
        if self._dl is None:
            from torch.utils.data import DataLoader

            split = self.tr.dataset.split("train")  # on the CPU
            self._dl = DataLoader(
                range(len(split)),
                batch_size=self.tr.cfg.batch_size,
                shuffle=True,
                num_workers=self.workers,
                collate_fn=_HostCollate(split, self.python_loop),
                pin_memory=self.device.type == "cuda",
                persistent_workers=self.workers > 0,
                generator=torch.Generator().manual_seed(0),
            )
        return self._dl

    def _host_step(self, item):
        tr = self.tr
        batch = item.to(self.device, non_blocking=True)
        tr.optimizer.zero_grad(set_to_none=True)
        loss = tr.loss(batch)
        loss.backward()
        tr.optimizer.step()
        return loss.detach()

    # -- public --------------------------------------------------------------------------------------
    def epoch(self) -> float:
        """One full pass over the training split; returns seconds (device synchronised at both ends)."""
        self.tr.model.train()
        sync(self.device)
        t0 = time.perf_counter()
        if self.workers is None:
            order, totals = self._order()
            for s in range(self.num_steps):
                self._step(order, totals, s)
        else:
            for item in self._loader():
                self._host_step(item)
        sync(self.device)
        return time.perf_counter() - t0

    def step_times(self, iters: int = 10) -> dict:
        """Median time (ms) of one training step, each synchronised (steps cycle through an epoch)."""
        self.tr.model.train()
        if self.workers is None:
            order, totals = self._order()
            state = {"s": 0}

            def one():
                self._step(order, totals, state["s"] % self.num_steps)
                state["s"] += 1

        else:
            it = {"it": iter(self._loader())}

            def one():
                try:
                    item = next(it["it"])
                except StopIteration:
                    it["it"] = iter(self._loader())
                    item = next(it["it"])
                self._host_step(item)

        return time_call(one, self.device, warmup=1, iters=iters)

    def activation_mib(self) -> float:
        """MiB autograd keeps for backward in one eager training forward + loss of a full batch."""
        tr = self.tr
        rs = tr.splits["train"]
        B = tr.cfg.batch_size
        index = torch.arange(min(B, rs.num_users), device=self.device)
        batch = tr.train_batch(index)
        tr.model.train()
        with SavedBytes(tr.model) as saved:
            loss = tr.loss(batch)
        del loss
        if tr.cfg.grad_accum_steps > 1:  # one micro-batch's graph lives at a time
            return saved.mib / tr.cfg.grad_accum_steps
        return saved.mib

    def close(self):
        self._dl = None


class _HostCollate:
    """Builds the JaggedBatch (supervision included) of a list of user indices on the host (picklable).

    `python_loop=True` builds it the naive way, one user at a time through Python lists (what a
    per-example `Dataset.__getitem__` plus a padding collate does): the slow loader a profile should catch.
    """

    def __init__(self, split, python_loop: bool = False):
        self.split, self.python_loop = split, python_loop

    def __call__(self, indices):
        index = torch.as_tensor(indices, dtype=torch.int64)
        if not self.python_loop:
            return self.split.batch(index)
        sp = self.split
        offs = sp.offsets.tolist()
        cols = {"item_ids": [], "ratings": [], "timestamps": []}
        for u in index.tolist():  # one user at a time, through Python lists
            for name in cols:
                cols[name].extend(getattr(sp, name)[offs[u] : offs[u + 1]].tolist())
        batch = sp.batch(index)  # offsets and targets (cheap); the histories come from the lists
        for name, values in cols.items():
            setattr(batch, name, torch.tensor(values, dtype=torch.int64))
        return batch


def measure_trainer(
    cfg, dataset, *, host_loader_workers=None, recompute: bool = False, step_iters: int = 10, epochs: int = 2
) -> dict:
    """Build a Trainer for `cfg` on `dataset` and measure: one step (median ms), one epoch (s, the last of
    `epochs`; the first pays warm-up, compilation, autotuning), peak memory, activations kept for backward.
    `recompute=True` turns on activation recomputation with `hstu_tutorial.memory.enable_recompute`
    (the same thing the config key `recompute` does)."""
    from hstu_tutorial.memory import enable_recompute
    from hstu_tutorial.train import Trainer

    device = torch.device(
        "cuda"
        if (cfg.device == "auto" and torch.cuda.is_available())
        else ("cpu" if cfg.device == "auto" else cfg.device)
    )
    gc.collect()  # earlier trainers (reference cycles) must not count against this one
    if device.type == "cuda":
        torch.cuda.empty_cache()
    left_over = torch.cuda.memory_allocated(device) / MIB if device.type == "cuda" else 0.0
    reset_peak(device)
    t0 = time.perf_counter()
    tr = Trainer(cfg, dataset=dataset, verbose=False)
    if recompute:
        enable_recompute(tr.model)
    base_mib = None if device.type != "cuda" else torch.cuda.memory_allocated(device) / MIB - left_over
    # The peak starts here, before a CUDA graph is captured: replaying a graph allocates nothing the
    # allocator sees, so the capture (and its eager warm-up steps) is where a graph step's memory shows.
    reset_peak(device)
    run = TrainerEpochs(tr, host_loader_workers)
    epoch_times = [run.epoch() for _ in range(epochs)]
    first_s = time.perf_counter() - t0
    step = run.step_times(step_iters)
    peak = None if device.type != "cuda" else peak_mib(device) - left_over
    act = None
    try:
        act = run.activation_mib()
    except Exception:  # noqa: BLE001 - an estimate only; never fail a measurement over it
        act = None
    rs = tr.splits["train"]
    epoch_s = min(epoch_times[1:] or epoch_times) if epoch_times else None
    out = {
        "step_ms": step["median_ms"],
        "step_ms_min": step["min_ms"],
        "epoch_s": epoch_s,
        "first_epoch_s": epoch_times[0] + run.setup_s if epoch_times else None,
        "setup_to_trained_s": first_s,
        "steps_per_epoch": run.num_steps,
        # without a timed epoch: tokens of an average batch over the median step time
        "tokens_per_s": rs.total_tokens / epoch_s
        if epoch_s
        else rs.total_tokens / run.num_steps / (step["median_ms"] / 1e3),
        "peak_mem_mib": peak,
        "before_training_mib": base_mib,
        "activations_mib": act,
        "state_mib": state_mib(tr.model, tr.optimizer),
        "layout": tr.layout,
        "cuda_graphs": tr.graph is not None,
        "attention_impl": tr.attention_impl,
    }
    if out["peak_mem_mib"] is None and act is not None:
        out["est_mem_mib"] = act + out["state_mib"]
    run.close()
    tr.graph = None
    del tr, run
    gc.collect()
    return out


def profile_loading(
    cfg, dataset, host_loader_workers=None, steps: int = 4, row_limit: int = 8, python_loop: bool = False
) -> dict:
    """Profile `steps` training steps with torch.profiler, split into "data" (getting the next batch) and
    "compute" (forward, backward, optimizer; synchronised on a GPU) ranges. `python_loop=True`: the host
    loader builds batches one user at a time in Python (a naive loader).

    Returns {"data_ms", "compute_ms", "data_share", "table"}: if `data_share` is large, the GPU waits for
    the loader. `host_loader_workers=None` uses the trainer's device-resident batches.
    """
    from torch.profiler import ProfilerActivity, profile, record_function

    from hstu_tutorial.train import Trainer

    tr = Trainer(cfg, dataset=dataset, verbose=False)
    run = TrainerEpochs(tr, host_loader_workers, python_loop=python_loop)
    device = tr.device
    rs = tr.splits["train"]
    B = cfg.batch_size
    if host_loader_workers is None:
        order = torch.randperm(rs.num_users, generator=torch.Generator().manual_seed(0)).to(device)
        totals = rs.batch_totals(order, B)

        def next_batch(s):
            index = order[s * B : (s + 1) * B]  # (B,)
            return rs.jagged_batch(index, totals[s])

    else:
        it = iter(run._loader())

        def next_batch(s):
            return next(it).to(device, non_blocking=True)

    def compute(batch):
        tr.optimizer.zero_grad(set_to_none=True)
        loss = tr.loss(batch)
        loss.backward()
        tr.optimizer.step()
        sync(device)

    tr.model.train()
    compute(next_batch(0))  # warm-up
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with _native_stderr_silenced(), profile(activities=acts) as prof:
        for s in range(1, steps + 1):
            with record_function("data: next batch"):
                item = next_batch(s)
                sync(device)
            with record_function("compute: fwd+bwd+step"):
                compute(item)
    events = {e.key: e for e in prof.key_averages()}
    data_ms = events["data: next batch"].cpu_time_total / 1e3
    compute_ms = events["compute: fwd+bwd+step"].cpu_time_total / 1e3
    run.close()
    return {
        "data_ms": data_ms,
        "compute_ms": compute_ms,
        "data_share": data_ms / max(data_ms + compute_ms, 1e-9),
        "table": prof.key_averages().table(
            sort_by="self_cpu_time_total", row_limit=row_limit, max_name_column_width=40
        ),
    }


@contextlib.contextmanager
def _native_stderr_silenced():
    """Send the C++ side's stderr (the profiler's "USDT ... profiler_start" lines) to /dev/null for the block."""
    try:
        saved = os.dup(2)
    except OSError:  # no file descriptor 2: nothing to silence
        yield
        return
    sys.stderr.flush()
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
