"""The training run: data on the device, model, optimizer, the step, the epoch loop and evaluation."""

from __future__ import annotations

import contextlib
import copy
import functools
import os
import random
import signal
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from hstu_tutorial.data.reco_dataset import JaggedBatch
from hstu_tutorial.data.stochastic_length import stochastic_length_split
from hstu_tutorial.errors import ConfigError
from hstu_tutorial.losses import get_loss
from hstu_tutorial.memory import accumulated_backward
from hstu_tutorial.metrics import batch_ranks, metric_names, metrics_from_ranks, ranks_table
from hstu_tutorial.ops.options import use_options
from hstu_tutorial.training import (
    checkpoints,
    epoch_end,
    loss_rows,
    progress_bars,
    report,
    run_files,
    startup,
)
from hstu_tutorial.training.config import TrainConfig, config_from_dict, load_config
from hstu_tutorial.training.cuda_graph import SplitGraphs, StepGraph
from hstu_tutorial.training.distributed import (
    rank_steps,
    setup_distributed,
    wrap_ddp,
)
from hstu_tutorial.training.epoch_writer import STEPS_QUEUED_FIRST, EpochWriter
from hstu_tutorial.training.log import note
from hstu_tutorial.training.model import build_model, resolve_device
from hstu_tutorial.training.optimizer import AdamW
from hstu_tutorial.training.prefix_eval import PrefixPairs, paired_ranks, prefix_pairs
from hstu_tutorial.training.resident import ResidentSplit
from hstu_tutorial.training.signals import StopRun, install_sigint_handler

__all__ = ["Trainer", "train"]


def _with_kernel_options(method):
    """Run a Trainer method under the kernel options its config asks for (scoped: restored after)."""

    @functools.wraps(method)
    def wrapped(self, *args, **kwargs):
        with use_options(autotune=self.cfg.autotune):
            return method(self, *args, **kwargs)

    return wrapped


class Trainer:
    """One training run: data, model, optimizer, the epoch loop, evaluation, checkpoints and results.

    Use `train(config)` for the common case; the class is there for notebooks that want to poke at the
    model, the splits or the per-user evaluation afterwards, and for benchmarks that time `step`.
    """

    def __init__(self, cfg: TrainConfig, dataset=None, verbose: bool = True):
        self.cfg = cfg.validate()
        self.verbose = verbose
        t0 = time.perf_counter()
        # Under torchrun (WORLD_SIZE > 1): one process per GPU, DistributedDataParallel, rank 0 writes.
        self.device, self.rank, self.world = setup_distributed(resolve_device(cfg.device))
        if self.rank != 0:
            cfg = self.cfg = copy.deepcopy(cfg)
            cfg.tensorboard = cfg.progress = cfg.save_checkpoints = False
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)  # peak memory of this run, not the process's
            torch.backends.cuda.matmul.allow_tf32 = cfg.tf32
            torch.backends.cudnn.allow_tf32 = cfg.tf32
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        self.tune_s0 = report.tuning_seconds()  # the run's tile tuning is counted from here
        t_data = time.perf_counter()
        self.dataset = dataset = self._dataset(dataset)
        self.catalogue = dataset.catalogue.to(self.device)  # (C,)
        self.splits = {s: ResidentSplit(dataset.split(s), self.device) for s in ("train", "valid", "test")}
        # The histories training batches come from: the train split, or its copy that Stochastic Length
        # redraws every epoch (in place, so that a CUDA graph reads it); the splits themselves stay whole.
        sl = bool(cfg.stochastic_length_alpha)
        self.train_rows = ResidentSplit(dataset.split("train"), self.device) if sl else self.splits["train"]
        self.sl_epoch, self.sl_tokens_kept = -1, []  # epoch of the current draw; kept share per epoch
        # Where setup goes: data loading, and compiling the kernels in the first step(s) (tuning excluded)
        self.setup_split = {"data_s": time.perf_counter() - t_data, "compile_s": 0.0}
        torch.manual_seed(cfg.seed)  # model init does not depend on what data loading drew
        self.model, self.attention_impl = build_model(cfg, dataset.num_items, self.device)
        self.ddp = None
        if self.world > 1:
            self.ddp = wrap_ddp(self.model, self.device)
            torch.manual_seed(cfg.seed + self.rank)  # own dropout masks and negatives on every rank
        trained = self.ddp if self.ddp is not None else self.model
        self.forward = torch.compile(trained) if cfg.compile else trained
        self.use_graphs, self.layout = self._graphs_and_layout()
        fused = self.device.type == "cuda"
        self.optimizer = AdamW(  # torch's AdamW, without importing the compiler (training/optimizer.py)
            self.model.parameters(),
            lr=cfg.learning_rate,
            betas=tuple(cfg.betas),
            weight_decay=cfg.weight_decay,
            **({"fused": True, "capturable": self.use_graphs} if fused else {}),
        )
        self.loss_fn = get_loss(cfg.loss)
        self.perm_gen = torch.Generator().manual_seed(cfg.seed)
        self.autocast = (
            torch.autocast(self.device.type, dtype=torch.bfloat16) if cfg.bf16 else contextlib.nullcontext()
        )
        # Progress of the run (what a checkpoint holds besides weights).
        self.epoch = 0  # next epoch to run
        self.step_in_epoch = 0  # next step inside that epoch (non-zero after an interruption)
        self.global_step = 0
        self.history: list[dict] = []
        self.best: dict | None = None
        self.last_ranks, self.best_ranks = {}, None  # the best epoch's ranks become ranks_*.csv
        self.bad_epochs = 0
        self.epoch_perm: torch.Tensor | None = None
        self.perm_epoch = -1  # the epoch `epoch_perm` belongs to
        self._interrupted = False
        self._overlap_epoch_end: bool | None = None  # None: decided by `overlap_epoch_end`
        self.epoch_loss_sum = torch.zeros((), device=self.device)
        # The epochs' time: steps, evaluation, and the epoch ends' own work (checkpoints, logs; _after_epoch)
        self.elapsed = {"train_s": 0.0, "eval_s": 0.0, "end_s": 0.0}
        # checkpoints, TensorBoard, epoch lines: written while the next epoch's steps run (epoch_writer.py)
        self.epoch_writer = EpochWriter(gated=self.device.type == "cuda")
        self.final_line: Callable[[], object] | None = None  # the last epoch's line, printed after its file
        self.graph: StepGraph | None = None
        # The graph's loss on the supervised positions only (training/loss_rows.py): its fixed row budget,
        # the device flag of a batch replayed above it, the eager steps taken instead of one above it.
        self.loss_rows: int | None = None
        # Each padded training row's supervised positions, on the host (loss_rows.supervised_per_row): read
        # once, not at every epoch start, where reading it back would wait for the GPU's queued work.
        self._rows_supervised: torch.Tensor | None = None
        self._loss_overflow: torch.Tensor | None = None
        self.eager_steps_above_budget = 0
        # Each split's evaluation as a CUDA graph (same shapes every epoch). None: always eager (no graphs,
        # or torch.compile).
        self._eval_graphs = SplitGraphs(self.device) if self.use_graphs and not cfg.compile else None
        # Validation queries from the test pass where the model allows it (training/prefix_eval.py); decided
        # at the first evaluation of both splits: False when it does not apply.
        self._prefix_pairs: PrefixPairs | bool | None = None
        self.run_dir: Path | None = None
        self.writer = None
        self.setup_s = time.perf_counter() - t0

    def _dataset(self, dataset):
        """The config's dataset (loaded), or the one passed in once checked against the config."""
        cfg = self.cfg
        if dataset is None:
            return load_dataset(cfg, self.verbose)
        if dataset.max_seq_len != cfg.max_seq_len or dataset.protocol != cfg.protocol:
            raise ConfigError(
                f"the dataset passed in has max_seq_len={dataset.max_seq_len}, protocol={dataset.protocol!r} "
                f"but the config says max_seq_len={cfg.max_seq_len}, protocol={cfg.protocol!r}"
            )
        if getattr(dataset, "stable_sort", cfg.stable_sort) != cfg.stable_sort and self.verbose:
            note(
                f"the dataset passed in has stable_sort={dataset.stable_sort}, the config says "
                f"{cfg.stable_sort}: the dataset's order of same-second ratings is used"
            )
        return dataset

    def _graphs_and_layout(self) -> tuple[bool, str]:
        """Whether the step runs as a CUDA graph, and the batch layout ("padded" when it does)."""
        cfg = self.cfg
        use_graphs = self.device.type == "cuda" and cfg.cuda_graphs in ("auto", "on")
        if use_graphs and cfg.grad_accum_steps > 1:
            note("grad_accum_steps > 1: CUDA graphs off")
            use_graphs = False
        if use_graphs and (cfg.recompute or self.world > 1):
            note(f"{'recompute' if cfg.recompute else 'DistributedDataParallel'}: CUDA graphs off")
            use_graphs = False
        layout = cfg.layout if cfg.layout != "auto" else ("padded" if use_graphs else "jagged")
        if use_graphs and layout != "padded":
            note("CUDA graphs need fixed shapes: layout='padded' is used")
            layout = "padded"
        return use_graphs, layout

    # -- one training step ------------------------------------------------------------------------------
    def train_batch(self, index: torch.Tensor, total: int | None = None) -> JaggedBatch:
        """The training users `index (B,)` as a batch in the trainer's layout, supervision included.

        `total` (jagged layout): their summed history lengths, known ahead to spare a host sync."""
        rs = self.train_rows
        if self.layout == "padded":
            return rs.padded_batch(index)
        return rs.jagged_batch(index, total)

    def loss(
        self, batch: JaggedBatch, supervision: torch.Tensor | None = None, rows: int | None = None
    ) -> torch.Tensor:
        """Forward pass and mean loss over the supervised positions (`batch.next_item_ids` unless given).

        `rows`: the loss sees only the supervised positions, in exactly `rows` rows (a CUDA graph's fixed
        budget, training/loss_rows.py); the batch must not have more (counted in `_loss_overflow`)."""
        cfg = self.cfg
        supervision = batch.next_item_ids if supervision is None else supervision  # (T,)
        with self.autocast:
            out = self.forward(batch)  # (T, D)
        if rows is None:
            weights = (supervision != 0).float()  # (T,) padded positions are not supervised
        else:
            index, valid, overflow = loss_rows.compact_rows(supervision != 0, rows)  # (rows,)
            if self._loss_overflow is not None:
                self._loss_overflow += overflow
            out = out.index_select(0, index)  # (rows, D)
            supervision = torch.where(valid, supervision.index_select(0, index), 0)  # (rows,)
            weights = valid.float()  # (rows,) filler rows have weight zero
        return self.loss_fn(
            out.float(),
            supervision,
            self.model.item_embeddings,
            self.catalogue,
            cfg.num_negatives,
            cfg.temperature,
            weights=weights,
        )

    @_with_kernel_options
    def step(
        self,
        index: torch.Tensor,
        totals: Sequence[int] | None = None,
        *,
        use_graph: bool = True,
        supervised: int | None = None,
    ) -> torch.Tensor:
        """One optimisation step (forward, backward, AdamW) on the training users `index (B,)`.

        Returns the batch's mean loss as a 0-dim device tensor (nothing is read back to the host).
        `totals`: the token count of each of the step's `grad_accum_steps` micro-batches (jagged layout;
        None: counted here, one host sync). With a captured CUDA graph (`capture_graph`) and `use_graph`,
        the step is one graph replay; `use_graph=False` runs it eagerly. `supervised`: the batch's supervised
        positions, known on the host (None: counted here, one host sync, when the graph's loss has a row
        budget); a batch above the budget runs eagerly.
        """
        if self.graph is not None and use_graph:
            if self.loss_rows is None:
                return self.graph.replay(index)
            if supervised is None:
                supervised = self.supervised_count(index)
            if supervised <= self.loss_rows:
                return self.graph.replay(index)
            self.eager_steps_above_budget += 1
        rs = self.train_rows
        parts = self.cfg.grad_accum_steps
        if totals is None and self.layout == "jagged":
            totals = rs.batch_totals(index, self.cfg.batch_size // parts)
        self.optimizer.zero_grad(set_to_none=True)
        if parts == 1:
            loss = self.loss(self.train_batch(index, None if totals is None else totals[0]))
            loss.backward()
        else:
            chunks = index.split(self.cfg.batch_size // parts)
            totals = [None] * len(chunks) if totals is None else totals
            # Every history position is supervised: a micro-batch's share of the batch mean is its
            # share of the summed lengths (known on the device before any forward pass, no host sync).
            counts = torch.stack([rs.lengths[c].sum() for c in chunks])  # (k,)
            micro_batches = [self.train_batch(c, t) for c, t in zip(chunks, totals)]
            loss = accumulated_backward(self.loss, micro_batches, counts)
        self.optimizer.step()
        return loss.detach()

    def supervised_count(self, index: torch.Tensor) -> int:
        """The supervised positions of the padded training batch of users `index (B,)` (one host sync)."""
        return int((self.train_rows.padded_next_ids[index] != 0).sum())

    @_with_kernel_options
    def capture_graph(self) -> None:
        """Record the step (forward + backward + AdamW) as a CUDA graph that `step` then replays."""
        rs = self.train_rows
        B = self.cfg.batch_size
        index = torch.full((B,), rs.num_users, dtype=torch.int64, device=self.device)  # (B,) filler rows
        index[: min(B, rs.num_users)] = torch.arange(min(B, rs.num_users), device=self.device)

        self.loss_rows = loss_rows.split_budget(rs, B)
        self._loss_overflow = torch.zeros((), dtype=torch.int64, device=self.device)

        def batch_loss(idx: torch.Tensor) -> torch.Tensor:
            return self.loss(rs.padded_batch(idx), rows=self.loss_rows)

        self.graph = StepGraph(self.model, self.optimizer, batch_loss, index)
        self._loss_overflow.zero_()  # the warm-up and capture batch do not count

    # -- evaluation -----------------------------------------------------------------------------------
    @_with_kernel_options
    def ranks(self, split: str) -> torch.Tensor:
        """Ranks (U,) of every user's target in `split`, full ranking, seen items removed (on the device).

        With CUDA graphs, the first evaluation of a split runs eagerly, the second captures it as a graph
        and later ones replay it: the same kernels on the same memory, without the host launching each."""
        if self._eval_graphs is None:
            return self._ranks_eager(split)
        return self._eval_graphs.run(split, lambda: self._ranks_eager(split), self._eval_watch())

    def _eval_watch(self) -> list[torch.Tensor]:
        """The tensors an evaluation graph reads: a replaced one means capturing it again."""
        return [*self.model.parameters(), *self.model.buffers(), self.catalogue]

    def _ranks_eager(self, split: str) -> torch.Tensor:
        batches = self.splits[split].batches(self.cfg.eval_batch_size)
        return batch_ranks(
            self.model,
            batches,
            self.catalogue,
            self.dataset.num_items,
            # a compiled or DDP wrapper runs every position; the plain model its last block's last only
            forward=None if self.forward is self.model else self.forward,
            autocast=self.autocast,
        )

    def _pairs(self) -> PrefixPairs | None:
        """The validation/test pairing of prefix_eval, or None where one pass cannot serve both splits (a
        model whose queries read timestamps, a compiled or distributed forward, no user covered)."""
        if self._prefix_pairs is None:
            ok = hasattr(self.model, "query_embeddings_and_previous") and self.forward is self.model
            pairs = (
                prefix_pairs(self.splits["valid"], self.splits["test"], self.cfg.eval_batch_size)
                if ok
                else None
            )
            self._prefix_pairs = pairs if pairs is not None and pairs.covered > 0 else False
        return self._prefix_pairs or None

    @_with_kernel_options
    def ranks_valid_and_test(self, pairs: PrefixPairs) -> dict[str, torch.Tensor]:
        """`ranks("valid")` and `ranks("test")` from one pass over the test histories (prefix_eval.py), as one
        CUDA graph under the same rules as `ranks`."""

        def both() -> torch.Tensor:
            valid, test = self.splits["valid"], self.splits["test"]
            args = (self.model, valid, test, pairs, self.catalogue, self.dataset.num_items, self.autocast)
            return torch.cat(paired_ranks(*args))  # (U_v + U_t,)

        if self._eval_graphs is None:
            out = both()
        else:
            out = self._eval_graphs.run("valid+test", both, self._eval_watch())
        U_v = self.splits["valid"].num_users
        return {"valid": out[:U_v], "test": out[U_v:]}

    def evaluate(self, splits: Sequence[str] = ("valid", "test")) -> dict[str, dict[str, float]]:
        """Metrics of the current model on `splits` (one host transfer for all of them)."""
        return _drain(self.evaluation(splits))

    def evaluation(self, splits: Sequence[str]):
        """`evaluate` as a generator: it yields once between queueing the work and reading it back."""
        names, flat = self.queue_metrics(splits)
        yield  # training/multi_seed.py queues the other seeds' evaluations here
        return {s: dict(zip(names, vals)) for s, vals in zip(splits, flat.tolist())}

    def queue_metrics(self, splits: Sequence[str]) -> tuple[list[str], torch.Tensor]:
        """Queue the evaluation of `splits` (nothing read back): the metric names and their values `(S, M)` on
        the device; each split's ranks in `last_ranks`."""
        ks = self.cfg.eval_ks
        pairs = self._pairs() if {"valid", "test"} <= set(splits) else None
        paired = self.ranks_valid_and_test(pairs) if pairs is not None else {}
        self.last_ranks = {
            s: paired[s] if s in paired else self.ranks(s) for s in splits
        }  # (U,) on the device
        per_split = [metrics_from_ranks(self.last_ranks[s], ks, as_float=False) for s in splits]
        names = metric_names(ks)
        return names, torch.stack([torch.stack([m[n] for n in names]) for m in per_split])  # (S, M)

    @_with_kernel_options
    def capture_evaluation(self) -> None:
        """With CUDA graphs: run the per-epoch evaluation once eagerly (kernels chosen, validation/test pairs
        found) and once as its graph's capture, before the first epoch, as the step's graph is captured then;
        the epochs' clocks count graph replays only. The weights are not changed."""
        if self._eval_graphs is None:
            return
        last = self.last_ranks
        for _ in range(2):  # SplitGraphs: eager the first time, captured the second
            self.queue_metrics(("valid", "test"))
        self.last_ranks = last
        torch.cuda.synchronize(self.device)

    @property
    def overlap_epoch_end(self) -> bool:
        """Whether an epoch's bookkeeping waits until the next epoch's steps are queued (epoch_end.py): on a GPU,
        alone, without early stopping (which would stop an epoch late). `overlap_epoch_end = False` turns it
        off (True forces it, on a CPU too, without early stopping: tests)."""
        if self.cfg.early_stopping_patience:
            return False
        if self._overlap_epoch_end is not None:
            return self._overlap_epoch_end
        return self.device.type == "cuda" and self.world == 1

    @overlap_epoch_end.setter
    def overlap_epoch_end(self, value: bool | None) -> None:
        self._overlap_epoch_end = value

    def per_user_ranks(self, split: str = "test"):
        """A pandas DataFrame: user_id, target_item_id, history_length, rank (for analyses)."""
        rs = self.splits[split]
        U = rs.num_users
        return ranks_table(self.ranks(split), rs.user_ids[:U], rs.target_item_ids[:U], rs.lengths[:U])

    # -- checkpoints (hstu_tutorial.training.checkpoints) -----------------------------------------------
    def state_dict(self) -> dict:
        """Everything a resume needs (see `checkpoints.trainer_state`)."""
        return checkpoints.trainer_state(self)

    def save(self, path: str | os.PathLike) -> Path:
        """Write a resumable checkpoint to `path` now (rank 0 only, atomically), after the epoch files still
        being written."""
        return checkpoints.save_checkpoint(self, path)

    def flush_epoch_files(self) -> None:
        """Wait until what the epochs so far left to the epoch writer (checkpoint files, TensorBoard scalars)
        is written: fit's `callback` runs while the epoch's files may still be being written."""
        self.epoch_writer.flush()

    def load(self, path: str | os.PathLike) -> Path:
        """Continue from a checkpoint file or run folder (its ckpt_last.pt); returns the file read."""
        return checkpoints.load_checkpoint(self, path)

    def load_weights(self, path: str | os.PathLike = "") -> int:
        """Load model weights only (default: this run's ckpt_best.pt); returns the epoch they come from."""
        return checkpoints.load_weights(self, path)

    # -- results (hstu_tutorial.training.report) --------------------------------------------------------
    def results(self, status: str = "completed") -> dict:
        """Best-by-validation and reference-protocol numbers, timing and the per-epoch history."""
        return report.run_results(self, status)

    def write_results(self, results: dict) -> None:
        """results.json, results.md, ranks_test/valid.csv, the experiment record (rank 0; run_files)."""
        run_files.write_run_files(self, results)

    # -- the loop -------------------------------------------------------------------------------------
    def _make_run_dir(self) -> Path:
        cfg = self.cfg
        name = cfg.name + (time.strftime("-%Y%m%d-%H%M%S") if cfg.timestamp_run_dir else "")
        return Path(cfg.exp_dir) / f"{cfg.dataset}-l{cfg.max_seq_len}" / name

    def epoch_order(self) -> torch.Tensor:
        """A new shuffled order (U',) of the training users, from the run's seeded stream (CPU)."""
        rs = self.splits["train"]
        order = torch.randperm(rs.num_users, generator=self.perm_gen)  # (U,) on the CPU: a seeded stream
        if self.layout == "padded":  # fill the last batch with the empty row U
            B = self.cfg.batch_size
            fill = -len(order) % B
            order = torch.cat([order, torch.full((fill,), rs.num_users, dtype=torch.int64)])
        return order

    def _start(self) -> None:
        """Before the first epoch of this call to `fit`: resume, run folder, TensorBoard, CUDA graph."""
        startup.start(self)

    def _add_compile_time(self, t0: float, tune0: float) -> None:
        """Count the time since `t0` (the first step(s), where kernels compile), less tuning, as compile."""
        startup.add_compile_time(self, t0, tune0)

    @_with_kernel_options
    def fit(self, callback: Callable[[dict], object] | None = None) -> dict:
        """Run the remaining epochs; returns the results dict (also written as results.json/.md)."""
        return _drain(self.fit_steps(callback))

    def fit_steps(self, callback: Callable[[dict], object] | None = None):
        """`fit` as a generator (yields after each step and in each evaluation): multi_seed.py turns it."""
        cfg = self.cfg
        self._start()
        status = "completed"
        steps_this_call = 0
        B = cfg.batch_size
        show = cfg.progress and self.verbose
        bar = progress_bars.epoch_bar(cfg, self.epoch) if show else None
        steps_bar = None
        old_handler = install_sigint_handler(self)
        if self._patience_spent():  # resumed from a checkpoint written as early stopping struck
            status = "early_stopped"
        ending = None  # an epoch whose bookkeeping waits for the next epoch's steps (epoch_end.py)
        start = None  # the epoch's start on its clock
        try:
            try:
                while status == "completed" and self.epoch < cfg.num_epochs:
                    if start is None or not self.overlap_epoch_end:
                        start = epoch_end.start_mark(self)
                    if self.perm_epoch != self.epoch:
                        self.epoch_perm = self.epoch_order()
                        self.perm_epoch = self.epoch
                        self.epoch_loss_sum = torch.zeros((), device=self.device)
                    if self.sl_epoch != self.epoch:
                        self.stochastic_length_draw()
                    order = self.epoch_perm
                    if self.device.type == "cuda":  # from pinned memory: no wait for the queued work
                        order = order.pin_memory()
                    order = order.to(self.device, non_blocking=True)
                    num_steps = -(-len(order) // B)
                    steps = rank_steps(num_steps, self.rank, self.world)  # this rank's share (all, alone)
                    totals = None
                    per = cfg.grad_accum_steps
                    if self.layout == "jagged":
                        totals = self.train_rows.batch_totals(order, B // per)  # one host sync per epoch
                    supervised = (
                        None  # every batch's supervised positions, when the graph's loss has a budget
                    )
                    if self.graph is not None and self.loss_rows is not None:
                        if self._rows_supervised is None:  # one host sync, once per draw of the histories
                            self._rows_supervised = loss_rows.supervised_per_row(
                                self.train_rows.padded_next_ids
                            )
                        supervised = loss_rows.step_counts(self._rows_supervised, self.epoch_perm, B)
                    self.model.train()
                    if show and not self.use_graphs:  # CUDA graph steps are too fast to need it
                        steps_bar = progress_bars.step_bar(len(steps), self.step_in_epoch, self.epoch)
                    while self.step_in_epoch < len(steps):
                        if self._interrupted:
                            raise StopRun("interrupted")
                        if cfg.max_steps and steps_this_call >= cfg.max_steps:
                            raise StopRun("stopped")
                        s = steps[self.step_in_epoch]
                        index = order[s * B : (s + 1) * B]  # (B,)
                        part = None if totals is None else totals[s * per : (s + 1) * per]
                        first = self.graph is None and self.global_step == 0  # an eager first step compiles
                        clock = (time.perf_counter(), report.tuning_seconds()) if first else None
                        rows = None if supervised is None else supervised[s]
                        self.epoch_loss_sum += self.step(index, part, supervised=rows)
                        if clock is not None:
                            self._add_compile_time(*clock)
                        self.step_in_epoch += 1
                        self.global_step += 1
                        steps_this_call += 1
                        if self.step_in_epoch >= min(STEPS_QUEUED_FIRST, len(steps)):
                            self.epoch_writer.allow()  # the last epoch's files, while the GPU has steps to run
                        if steps_bar is not None:
                            steps_bar.update(1)
                        yield
                    if steps_bar is not None:  # the full-ranking evaluation can take as long as the steps
                        steps_bar.set_description(f"epoch {self.epoch}: evaluating")
                    if ending is not None:  # the previous epoch's bookkeeping, this epoch's steps queued
                        ending, previous = None, ending
                        status = yield from epoch_end.finish(self, previous, bar, callback, overlapped=True)
                    ending = yield from epoch_end.queue(self, len(steps), start)
                    start = ending.done  # the next epoch's train time starts where this evaluation ends
                    if steps_bar is not None:
                        steps_bar.close()
                    if status == "completed" and (not self.overlap_epoch_end or self.epoch >= cfg.num_epochs):
                        ending, current = None, ending
                        status = yield from epoch_end.finish(self, current, bar, callback, overlapped=False)
                    if status == "interrupted":
                        raise StopRun("interrupted")
            except KeyboardInterrupt:
                status = "interrupted"
            except StopRun as stop:
                status = stop.status
            if ending is not None:  # stopped inside an epoch: the one before it still has its bookkeeping
                ending, previous = None, ending
                try:
                    yield from epoch_end.finish(self, previous, bar, callback, overlapped=False)
                except KeyboardInterrupt:  # a second Ctrl-C: the checkpoint below is still written
                    status = "interrupted"
        except BaseException:
            self._close_writer_quietly()  # the files queued so far still land; the error that ended the run wins
            raise
        finally:
            if steps_bar is not None:
                steps_bar.close()
            if bar is not None:
                bar.close()
            if old_handler is not None:
                signal.signal(signal.SIGINT, old_handler)
        if cfg.save_checkpoints or status in ("interrupted", "stopped"):
            self.save(self.run_dir / "ckpt_last.pt")
        self.epoch_writer.close()  # every epoch file on disk before the results point at them
        if self.final_line is not None:  # the last epoch's line, now that its checkpoint is written
            line, self.final_line = self.final_line, None
            line()
        if status in ("interrupted", "stopped"):
            note(
                f"{status} at epoch {self.epoch} step {self.step_in_epoch}; continue with "
                f"--set resume={self.run_dir / 'ckpt_last.pt'}"
            )
        results = self.results(status)
        self.write_results(results)
        if self.writer is not None:
            self.writer.flush()
        return results

    def _close_writer_quietly(self) -> None:
        try:
            self.epoch_writer.close()
        except Exception as err:  # noqa: BLE001 - reported, not raised over the run's own error
            note(f"a checkpoint write also failed: {type(err).__name__}: {err}")

    def stochastic_length_draw(self) -> None:
        """Redraw the training histories for this epoch with Stochastic Length (a no-op when it is off)."""
        cfg, self.sl_epoch = self.cfg, self.epoch
        if not cfg.stochastic_length_alpha:
            return
        # A generator per epoch, seeded from the run's seed: reproducible, and a resumed run redraws the same.
        gen = torch.Generator(device=self.device).manual_seed((cfg.seed * 1_000_003 + self.epoch) % 2**63)
        whole = self.splits["train"].split
        view = stochastic_length_split(
            whole, cfg.stochastic_length_alpha, generator=gen, selection=cfg.stochastic_length_selection
        )
        self.train_rows.refill_(view)
        self._rows_supervised = None
        self.sl_tokens_kept.append(view.num_tokens / max(whole.num_tokens, 1))

    def _patience_spent(self) -> bool:
        """Early stopping: True (with a note) after `early_stopping_patience` epochs without a better one."""
        return epoch_end.patience_spent(self)

    def _after_epoch(self, record: dict, bar, state: tuple | None = None) -> None:
        """Best epoch, checkpoints, TensorBoard and the progress line after an epoch (training/epoch_end.py);
        `state`: the epoch's snapshotted checkpoint state."""
        epoch_end.after_epoch(self, record, bar, state)


def load_dataset(cfg: TrainConfig, verbose: bool = True):
    """The dataset a config names (its folder, protocol, window, ordering and synthetic size)."""
    from hstu_tutorial.data import get_reco_dataset

    return get_reco_dataset(
        cfg.dataset,
        max_seq_len=cfg.max_seq_len,
        data_dir=cfg.data_dir or None,
        protocol=cfg.protocol,
        stable_sort=cfg.stable_sort,
        synthetic_size=cfg.synthetic_size,
        verbose=verbose,
    )


def _drain(steps):
    """Run a generator to its end; returns what it returns."""
    while True:
        try:
            next(steps)
        except StopIteration as end:
            return end.value


def train(
    config: TrainConfig | str | os.PathLike | None = None,
    callback: Callable[[dict], object] | None = None,
    dataset=None,
    verbose: bool = True,
    **overrides,
) -> dict:
    """Train a model as `config` says (a TrainConfig, a TOML path or a bundled name) and return the results.

    `callback(record)` is called after every epoch with {"epoch", "loss", "valid": {...}, "test": {...}}
    (live curves in a notebook); the epoch's checkpoint files may still be being written then (a Trainer's
    `flush_epoch_files()` waits for them; all are on disk when train returns). On a GPU it runs once the next
    epoch's steps are queued (`Trainer.overlap_epoch_end`), so the model's weights may have moved on by then;
    the epoch's own are in its `ckpt_last.pt`. Keyword arguments override
    config keys. The returned dict has "best_by_valid", "reference_protocol", "timing" and "history";
    `results["trainer"]` is the Trainer.
    """
    if isinstance(config, TrainConfig):
        cfg = config_from_dict(overrides, config, source="keyword arguments").validate()
    else:
        cfg = load_config(config, overrides=overrides)
    trainer = Trainer(cfg, dataset=dataset, verbose=verbose)
    results = trainer.fit(callback=callback)
    results["trainer"] = trainer
    return results
