"""Several seeds of one config trained side by side in one process: `hstu-train --config X --seeds 42,1,2,3`.

Each seed is a whole run of its own, as `--set seed=<s>` alone would train it: its own Trainer
(model, optimizer, data order, RNG streams), its run folder `<name>-s<seed>` with the usual results.json
and checkpoints, evaluation after every epoch and its own early stopping (a seed that stops leaves the
rotation). At the end, `<name>-seeds/seeds.json` and `seeds.md` hold the mean ± standard deviation over
the seeds of every test metric the trainer reports.

How the seeds share the GPU. An ML-1M step is a few hundred small kernels (about 4 ms on an NVIDIA H200,
benchmarks/results/h200_2026-11-28/profile.md) that leave most of the GPU idle. Every run here is a
generator (`Trainer.fit_steps`) that yields after each step and between queueing an evaluation and reading
it back; the host turns the runs round-robin, each on its own CUDA stream, each step one replay of that
seed's captured CUDA graph. Nothing waits for the GPU inside a turn, so the host queues the steps of all
seeds and the GPU runs the kernels of different streams at the same time.

Why not one batched model (`torch.func.stack_module_state` + `vmap`)? It could not give each seed's own
results: vmap's random numbers (dropout, negatives) are not the stream a single run of that seed draws; the
Triton attention kernel is a `torch.autograd.Function` with no vmap rule, so it would need a seed axis
folded into its grid; the seeds would share one data order unless every batch were gathered per seed; and
a seed that stops early, or its checkpoint, does not come out of a stacked model. Streams keep every seed
the unchanged single-run code, CUDA graphs and Triton kernels included.

Each seed's RNG: the CPU and Python generators are swapped in and out at every turn; on CUDA every seed
owns a generator state (`Generator.clone_state`), made current for its turn with `graphsafe_set_state`.
A captured graph keeps the state it was captured with, so concurrent replays never share the device
tensors that hold the seed and offset of their random numbers.

On a CPU the seeds' histories equal their runs alone to the bit (tests/test_multi_seed.py). On a GPU a run
is not bitwise repeatable (atomic additions), so "the same run" means the same within a run's own
process-to-process spread: on an NVIDIA H200 (2026-12-01) the ML-1M HSTU seeds together minus alone averaged
-.0001 test HR@10 over 12 pairs and SASRec +.0003 (benchmarks/seeds_alone_vs_together.py,
`benchmarks/results/h200_2026-12-01/perf/graph_streams/`). That holds because each seed's CUDA graph is
captured on its own stream (training/cuda_graph.py): captured on PyTorch's one shared capture stream, the
graphs shared one cuBLAS workspace, concurrent replays corrupted each other's weight gradients and the
seeds trained .002-.007 HR@10 lower than alone.

Ctrl-C stops every seed after its step and saves its checkpoint (a second Ctrl-C aborts, still saving);
a seed that fails stops the others the same way and the error names the seed.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import torch

from hstu_tutorial.errors import ConfigError, HSTUError
from hstu_tutorial.training.config import TrainConfig
from hstu_tutorial.training.log import note

__all__ = ["parse_seeds", "seeds_markdown", "seeds_summary", "train_seeds"]

# The summaries of a run's test metrics in results.json, in the order results.md shows them.
SUMMARIES = {
    "reference_protocol": "mean of the last epochs",
    "final": "final epoch",
    "best_by_valid": "best by validation",
}


def parse_seeds(text: str) -> list[int]:
    """`"42,1,2,3"` -> [42, 1, 2, 3]; ConfigError on an empty list, a non-integer or a repeated seed."""
    items = [part.strip() for part in str(text).split(",")]
    seeds = []
    for item in items:
        try:
            seeds.append(int(item))
        except ValueError:
            raise ConfigError(
                f"--seeds {text!r}: {item!r} is not an integer; give comma-separated integers, "
                "e.g. --seeds 42,1,2,3"
            ) from None
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise ConfigError(
            f"--seeds {text!r}: seed {repeated[0]} is given twice; every seed trains its own run "
            "(folder <name>-s<seed>), so give each seed once"
        )
    return seeds


def seed_config(cfg: TrainConfig, seed: int) -> TrainConfig:
    """The config of one seed's run: the seed, the run name `<name>-s<seed>`, no tqdm bar (one line per
    epoch for all seeds instead)."""
    return replace(copy.deepcopy(cfg), seed=seed, name=f"{cfg.name}-s{seed}", progress=False).validate()


class _SeedRNG:
    """One seed's random number generators, made current for its turns (CPU, Python, CUDA state)."""

    def __init__(self, device: torch.device):
        self.cpu = self.python = None
        self.cuda_gen = self.cuda_state = None
        if device.type == "cuda":
            self.cuda_gen = torch.cuda.default_generators[device.index or 0]
            self.cuda_state = self.cuda_gen.clone_state()  # device tensors of its own for graph replays

    def enter(self) -> None:
        if self.cpu is not None:
            torch.set_rng_state(self.cpu)
            random.setstate(self.python)
        if self.cuda_gen is not None:
            self.cuda_gen.graphsafe_set_state(self.cuda_state)

    def leave(self) -> None:
        self.cpu, self.python = torch.get_rng_state(), random.getstate()


class _Turns:
    """The seeds' runs turned round-robin: each turn is one `next` of a run, in its RNG and stream."""

    def __init__(self, trainers: list, rngs: list[_SeedRNG], streams: list, on_epoch: Callable):
        self.trainers, self.rngs, self.streams = trainers, rngs, streams
        self.runs: list[Iterator | None] = [None] * len(trainers)  # started on their first turn
        self.results: list[dict | None] = [None] * len(trainers)
        self.on_epoch = on_epoch
        self.handler = None
        self.stopping = False  # Ctrl-C or a failure: runs not started yet never start

    @contextlib.contextmanager
    def turn_of(self, i: int):
        self.rngs[i].enter()
        stream = self.streams[i]
        with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
            try:
                yield
            finally:
                self.rngs[i].leave()

    def turn(self, i: int, throw: BaseException | None = None) -> bool:
        """One turn of run i (or `throw` raised at its yield); True once it has finished."""
        if self.runs[i] is None:
            if throw is not None or self.stopping:  # never started: nothing to save
                return True
            trainer = self.trainers[i]
            self.runs[i] = trainer.fit_steps(callback=lambda record, i=i: self.on_epoch(i, record))
        with self.turn_of(i):
            try:
                if throw is None:
                    next(self.runs[i])
                else:
                    self.runs[i].throw(throw)
            except StopIteration as end:
                self.results[i] = end.value
                return True
            finally:
                self._own_sigint()  # a run installs its own handler when it starts, restores one when done
        return False

    def _own_sigint(self) -> None:
        """Keep this rotation's Ctrl-C handler in force (it stops every seed, not one)."""
        if self.handler is not None and signal.getsignal(signal.SIGINT) is not self.handler:
            signal.signal(signal.SIGINT, self.handler)

    def stop_all(self) -> None:
        self.stopping = True
        for trainer in self.trainers:
            trainer._interrupted = True

    def run(self, seeds: Sequence[int]) -> list[dict]:
        """Turn every run to its end; Ctrl-C or a failing seed stops the others (checkpoints saved)."""
        active = list(range(len(self.trainers)))
        failed: tuple[int, BaseException] | None = None
        old = None
        if threading.current_thread() is threading.main_thread():

            def handler(signum, frame):
                if all(t._interrupted for t in self.trainers):
                    raise KeyboardInterrupt
                self.stop_all()
                note("Ctrl-C: every seed finishes its step, then saves a checkpoint (press again to abort)")

            self.handler = handler
            old = signal.signal(signal.SIGINT, handler)
        try:
            while active and failed is None:
                for i in list(active):
                    try:
                        done = self.turn(i)
                    except Exception as err:  # noqa: BLE001 - the others are stopped and saved below
                        failed, done = (i, err), True
                    except KeyboardInterrupt:  # a second Ctrl-C outside a run's own loop
                        self.stop_all()
                        for j in active:  # each catches it, saves its checkpoint and returns
                            with contextlib.suppress(Exception, KeyboardInterrupt):
                                self.turn(j, throw=KeyboardInterrupt())
                        active = []
                        break
                    if done:
                        active.remove(i)
                        result = self.results[i]
                        if result is not None and result["status"] == "interrupted":
                            self.stop_all()  # one seed saw Ctrl-C first: all stop
                    if failed is not None:
                        break
            if failed is not None:  # the others stop after their step and save a resumable checkpoint
                self.stop_all()
                for j in active:
                    with contextlib.suppress(Exception):  # the first failure is the one reported
                        while not self.turn(j):
                            pass
        finally:
            if old is not None:
                signal.signal(signal.SIGINT, old)
            self.handler = None
        if failed is not None:
            i, err = failed
            kind = HSTUError if isinstance(err, HSTUError) else RuntimeError
            saved = [f"s{seeds[j]}" for j in range(len(seeds)) if self.results[j] is not None]
            raise kind(
                f"seed {seeds[i]} failed: {type(err).__name__}: {err} "
                f"(the other seeds stopped and saved ckpt_last.pt: {', '.join(saved) or 'none'})"
            ) from err
        return self.results


def _epoch_printer(seeds: Sequence[int], metric: str, num_epochs: int):
    """A callback(i, record) that prints one line per epoch once every running seed has reported it."""
    pending: dict[int, dict[int, dict]] = {}

    def on_epoch(i: int, record: dict, running: Callable[[], int]) -> None:
        seen = pending.setdefault(record["epoch"], {})
        seen[i] = record
        if len(seen) < running():
            return
        cells = [
            f"s{seeds[j]} loss {r['loss']:.3f} valid {metric} {r['valid'][metric]:.4f}"
            for j, r in sorted(pending.pop(record["epoch"]).items())
        ]
        print(f"epoch {record['epoch'] + 1}/{num_epochs}: " + " | ".join(cells), flush=True)

    return on_epoch


def train_seeds(
    cfg: TrainConfig,
    seeds: Sequence[int],
    dataset=None,
    verbose: bool = True,
    write: bool = True,
    callback: Callable | None = None,
) -> dict:
    """Train one run of `cfg` per seed in this process, interleaved; returns {"runs", "summary", ...}.

    "runs": each seed's results dict (as `train` returns it, "trainer" included); "summary": mean ± std
    over the seeds (`seeds_summary`), also written as seeds.json / seeds.md in `<name>-seeds/` when
    `write`; "summary_dir": that folder. `callback(i, record)`: after every epoch of seed `seeds[i]`."""
    from hstu_tutorial.training.model import resolve_device
    from hstu_tutorial.training.trainer import Trainer, load_dataset

    seeds = list(seeds)
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds {seeds}: give at least one seed, each once")
    if cfg.resume:
        raise ConfigError(
            "--seeds starts new runs and cannot be combined with --resume: resume each seed's run "
            "on its own, e.g. --resume exps/<dataset>-l<N>/<name>-s<seed>"
        )
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("--seeds runs in one process on one device: start it without torchrun")
    cfg = cfg.validate()
    t0 = time.perf_counter()
    stamp = time.strftime("-%Y%m%d-%H%M%S") if cfg.timestamp_run_dir else ""
    device = resolve_device(cfg.device)
    if device.type == "cuda":
        torch.cuda.init()
        device = torch.device(
            "cuda", device.index if device.index is not None else torch.cuda.current_device()
        )
    dataset = (
        load_dataset(cfg, verbose) if dataset is None else dataset
    )  # once: it does not depend on the seed
    cuda_state0 = (
        torch.cuda.default_generators[device.index].graphsafe_get_state() if device.type == "cuda" else None
    )
    rng0 = (torch.get_rng_state(), random.getstate())
    trainers, rngs, streams = [], [], []
    try:
        for seed in seeds:
            rng = _SeedRNG(device)
            stream = torch.cuda.Stream(device) if device.type == "cuda" else None
            rng.enter()
            try:
                with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
                    trainer = Trainer(seed_config(cfg, seed), dataset=dataset, verbose=verbose)
            except Exception as err:
                kind = HSTUError if isinstance(err, HSTUError) else RuntimeError
                raise kind(f"seed {seed}: setting up its run failed: {type(err).__name__}: {err}") from err
            if stamp:  # every seed's folder carries the same time stamp as the summary's
                trainer.run_dir = (
                    Path(cfg.exp_dir) / f"{cfg.dataset}-l{cfg.max_seq_len}" / f"{trainer.cfg.name}{stamp}"
                )
            rng.leave()
            trainers.append(trainer)
            rngs.append(rng)
            streams.append(stream)
        show = (
            _epoch_printer(seeds, cfg.selection_metric, cfg.num_epochs) if cfg.progress and verbose else None
        )
        turns = _Turns(trainers, rngs, streams, on_epoch=lambda i, r: None)
        running = lambda: sum(run is None or r is None for run, r in zip(turns.runs, turns.results))  # noqa: E731

        def on_epoch(i: int, record: dict) -> None:
            if show is not None:
                show(i, record, running)
            if callback is not None:
                callback(i, record)

        turns.on_epoch = on_epoch
        runs = turns.run(seeds)
    finally:
        torch.set_rng_state(rng0[0])
        random.setstate(rng0[1])
        if cuda_state0 is not None:
            torch.cuda.default_generators[device.index].graphsafe_set_state(cuda_state0)
    wall = time.perf_counter() - t0
    for trainer, res in zip(trainers, runs):
        if res is not None:
            res["trainer"] = trainer
    summary = seeds_summary(runs, seeds, cfg, wall_s=wall)
    out_dir = Path(cfg.exp_dir) / f"{cfg.dataset}-l{cfg.max_seq_len}" / f"{cfg.name}-seeds{stamp}"
    if write:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "seeds.json").write_text(json.dumps(summary, indent=1, default=str))
        (out_dir / "seeds.md").write_text(seeds_markdown(summary))
    return {"runs": runs, "seeds": seeds, "summary": summary, "summary_dir": str(out_dir), "wall_s": wall}


def _test_metrics(results: dict, which: str) -> dict[str, float] | None:
    """One run's test metrics for a summary: reference_protocol (mean of last epochs), final, best_by_valid."""
    ref = results.get("reference_protocol")
    if not ref:
        return None
    if which == "reference_protocol":
        return ref["test_mean"]
    if which == "final":
        return ref["test_final"]
    return (results.get("best_by_valid") or {}).get("test")


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (n - 1 in the denominator; None for a single value)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def seeds_summary(runs: Sequence[dict], seeds: Sequence[int], cfg: TrainConfig, wall_s: float = 0.0) -> dict:
    """Mean ± sample standard deviation over the seeds of every test metric, per summary of a run."""
    per_run = [
        {
            "seed": seed,
            "status": res["status"] if res else "not started",
            "epochs_run": res["epochs_run"] if res else 0,
            "run_dir": res.get("run_dir") if res else None,
            "train_eval_s": res.get("timing", {}).get("train_eval_s") if res else None,
            **{which: _test_metrics(res, which) if res else None for which in SUMMARIES},
        }
        for seed, res in zip(seeds, runs)
    ]
    metrics = {}
    for which in SUMMARIES:
        rows = [r[which] for r in per_run if r[which]]
        if not rows:
            continue
        metrics[which] = {}
        for name in rows[0]:
            values = [row[name] for row in rows]
            mean, std = mean_std(values)
            metrics[which][name] = {"mean": mean, "std": std, "n": len(values), "values": values}
    base = {k: v for k, v in cfg.to_dict().items() if k != "seed"}
    return {
        "name": cfg.name,
        "seeds": list(seeds),
        "statuses": {str(r["seed"]): r["status"] for r in per_run},
        "std": "sample standard deviation over the seeds (n - 1)",
        "metrics": metrics,
        "runs": per_run,
        "device": next((res["device"] for res in runs if res), None),
        "wall_s": wall_s,
        "config": base,
    }


def _label(name: str) -> str:
    return name.upper() if name == "mrr" else name.replace("hr", "HR").replace("ndcg", "NDCG")


def seeds_markdown(summary: dict) -> str:
    """The summary as Markdown: one table of mean ± std per summary and metric, then one row per seed."""
    seeds = ", ".join(str(s) for s in summary["seeds"])
    lines = [f"# {summary['name']}: {len(summary['seeds'])} seeds ({seeds})", ""]
    metrics = summary["metrics"]
    if metrics:
        names = list(next(iter(metrics.values())))
        lines += [
            "| test metrics, mean ± std over seeds | " + " | ".join(_label(n) for n in names) + " |",
            "|---" * (len(names) + 1) + "|",
        ]
        for which, label in SUMMARIES.items():
            if which in metrics:
                cells = [_cell(metrics[which][n]) for n in names]
                lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines += ["", f"std: {summary['std']}.", ""]
    lines += ["| seed | status | epochs | HR@10 | NDCG@10 (mean of the last epochs) | run folder |"]
    lines += ["|---|---|---|---|---|---|"]
    for r in summary["runs"]:
        ref = r["reference_protocol"] or {}
        hr, ndcg = ref.get("hr@10"), ref.get("ndcg@10")
        fmt = lambda v: "" if v is None else f"{v:.4f}"  # noqa: E731
        lines.append(
            f"| {r['seed']} | {r['status']} | {r['epochs_run']} | {fmt(hr)} | {fmt(ndcg)} | {r['run_dir']} |"
        )
    lines += ["", f"Device {summary['device']}; all seeds in one process: {summary['wall_s']:.1f} s.", ""]
    return "\n".join(lines)


def _cell(stat: dict) -> str:
    if stat["std"] is None:
        return f"{stat['mean']:.4f}"
    return f"{stat['mean']:.4f} ± {stat['std']:.4f}"
