"""The CUDA-graph step with its loss on the supervised positions only, against the loss on every padded position.

    PYTHONPATH=. python benchmarks/bench_loss_rows.py --data-dir data/ml-1m-u2999 [--out DIR]   # GPU
    PYTHONPATH=. python benchmarks/bench_loss_rows.py --smoke                                  # CPU

For the ML-1M HSTU and SASRec configs, one trainer each: the step is captured as a CUDA graph twice, with the
loss's row budget (training/loss_rows.py) and without it (all B*N positions), and whole training epochs of
each graph are timed in alternation (`--rounds` times each, median), so both see the same GPU and clocks.
Also printed: the budget, the share of padded positions it leaves out, the epochs' steps run eagerly
because their batch was above the budget, and the mean training loss of each variant's epochs (one model
trains on through all of them, so they are close, not equal). `--smoke`: synthetic data on the CPU, where there is no graph:
the eager step with and without the budget, for the logic only.

`--check`: instead, on several batches of a random epoch order, the loss and every gradient with the budget
against all positions, negatives fixed per position, dropout off, TF32 off (`loss_rows.compare_with_all_positions`),
and whether the inputs came back unchanged; exits 1 on a difference above 1e-5 (loss) or 1e-4 (gradients).

`--accuracy 42,1,2,3`: instead, train those seeds in full (`train_seeds`, one process) with the budget and
again without it, and print each variant's test HR@10 / NDCG@10 (mean of the last epochs) per seed and
mean ± std. The two variants draw different negatives, so they agree only within the seeds' spread.

`--fallback`: instead, train `--fallback-epochs` epochs (`Trainer.fit`, CUDA graph and evaluation as in a real
run) with the budget lowered to a random batch's mean count, so that about half the batches are above it and
run as eager steps between the graph's replays; exits 1 unless the run completes (the device counter of a
batch replayed above the budget would stop it), some steps ran eagerly, the host's count of batches above the
budget equals the eager steps, and the losses and metrics are finite.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_seeds import MODELS, SMOKE  # noqa: E402

from hstu_tutorial.perf import machine_info, save_results  # noqa: E402
from hstu_tutorial.perf.measure import sync  # noqa: E402
from hstu_tutorial.training import loss_rows  # noqa: E402
from hstu_tutorial.training.config import TrainConfig, load_config  # noqa: E402
from hstu_tutorial.training.trainer import Trainer  # noqa: E402

QUIET = {"tensorboard": False, "progress": False, "save_checkpoints": False}


def config_name(model: str, args) -> str:
    """The bundled config of `model`: the ML-1M one, or its synthetic stand-in with --smoke."""
    return (SMOKE if args.smoke else MODELS)[model]


def config_for(model: str, args, **sets) -> TrainConfig:
    """The ML-1M config of `model` (its synthetic stand-in with --smoke, on the CPU), without files, plus `sets`."""
    sets = {**QUIET, **sets}
    if args.smoke:
        sets["device"] = "cpu"
    elif args.data_dir:
        sets["data_dir"] = args.data_dir
    return load_config(config_name(model, args), sets)


def trainer_for(model: str, args, **sets) -> Trainer:
    """A Trainer of `config_for(model, args, **sets)` (bench_eval_graph.py uses it too)."""
    return Trainer(config_for(model, args, **sets), verbose=False)


@contextlib.contextmanager
def no_budget():
    """Inside: a graph captured by the trainer gives its loss every position (the budget switched off)."""
    real = loss_rows.row_budget
    loss_rows.row_budget = lambda *a, **k: None
    try:
        yield
    finally:
        loss_rows.row_budget = real


@contextlib.contextmanager
def budget_at_mean():
    """Inside: the graph's loss budget is a random batch's mean count (no margin): about half the batches exceed it."""
    real = loss_rows.row_budget
    loss_rows.row_budget = lambda counts, batch_size, width, sigmas=0.0: real(counts, batch_size, width, 0.0)
    try:
        yield
    finally:
        loss_rows.row_budget = real


def fallback(model: str, args) -> dict:
    """A short real run with the budget at the mean: graph replays and eager steps above it, mixed."""
    import math

    epochs = 2 if args.smoke else args.fallback_epochs
    sets = {"num_epochs": epochs, "exp_dir": args.exp_dir, "name": f"loss-rows-fallback-{model}", "seed": 0}
    with budget_at_mean():
        tr = trainer_for(model, args, **sets)
        seen = {"above": 0, "miscounted": 0}
        real_step = tr.step

        def step(index, totals=None, *, use_graph=True, supervised=None):
            # the host's count the trainer passes, against a count on the device (one sync: a check, not a run)
            if supervised is not None:
                seen["miscounted"] += int(supervised != tr.supervised_count(index))
                seen["above"] += int(tr.loss_rows is not None and supervised > tr.loss_rows)
            return real_step(index, totals, use_graph=use_graph, supervised=supervised)

        tr.step = step
        results = tr.fit()
    rs, B = tr.train_rows, tr.cfg.batch_size
    above = seen["above"]
    history = results.get("history", [])
    numbers = [h.get("loss") for h in history] + [
        v for h in history for split in ("valid", "test") for v in (h.get(split) or {}).values()
    ]
    finite = all(isinstance(v, (int, float)) and math.isfinite(v) for v in numbers if v is not None)
    return {
        "model": model,
        "config": config_name(model, args),
        "graph": tr.use_graphs,
        "budget": tr.loss_rows,
        "epochs": epochs,
        "status": results.get("status"),
        "steps": epochs * (-(-rs.num_users // B)),
        "eager_steps_above_budget": tr.eager_steps_above_budget,
        "host_count_above_budget": above,
        "host_counts_wrong": seen["miscounted"],
        "finite": finite,
        "train_loss": [h.get("loss") for h in history],
    }


def _fallback_ok(row: dict) -> bool:
    mixed = row["eager_steps_above_budget"] > 0 or not row["graph"]
    return (
        row["status"] == "completed"
        and mixed
        and row["eager_steps_above_budget"] == row["host_count_above_budget"]
        and row["host_counts_wrong"] == 0
        and row["finite"]
    )


def fallback_markdown(rows: list[dict], machine: str) -> str:
    lines = [
        f"# Graph replays and eager steps above the loss budget in one run ({machine})",
        "",
        "| model | budget (at the mean) | epochs | steps | eager steps | batches above, host count "
        "| host counts wrong | status | finite | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['budget']} | {r['epochs']} | {r['steps']} | {r['eager_steps_above_budget']} "
            f"| {r['host_count_above_budget']} | {r['host_counts_wrong']} | {r['status']} | {'yes' if r['finite'] else 'NO'} "
            f"| {'PASS' if _fallback_ok(r) else 'FAIL'} |"
        )
    lines += [
        "",
        "Training loss per epoch: "
        + "; ".join(
            f"{r['model']} " + ", ".join(f"{v:.4f}" for v in r["train_loss"] if v is not None) for r in rows
        ),
    ]
    return "\n".join(lines) + "\n"


def _epoch(tr: Trainer, order_cpu: torch.Tensor, budgeted: bool) -> tuple[float, float, int]:
    """One pass over `order_cpu` with the trainer's graph (or eager step); (seconds, mean loss, eager steps)."""
    B = tr.cfg.batch_size
    order = order_cpu.to(tr.device)
    counts = None
    if budgeted and tr.loss_rows is not None:
        counts = loss_rows.split_step_counts(tr.train_rows, order_cpu, B)
    eager0 = tr.eager_steps_above_budget
    steps = order.numel() // B
    total = torch.zeros((), device=tr.device)
    sync(tr.device)
    t0 = time.perf_counter()
    for s in range(steps):
        rows = None if counts is None else counts[s]
        total += tr.step(order[s * B : (s + 1) * B], supervised=rows)
    sync(tr.device)
    return time.perf_counter() - t0, (total / steps).item(), tr.eager_steps_above_budget - eager0


def graph_variants_in_rotation(tr: Trainer, settings: dict, orders: list) -> tuple[dict, dict, dict, dict]:
    """Time the trainer's step under each of `settings` (name -> a function returning the context manager the
    variant runs under): each variant is captured as its own CUDA graph (eager steps on a CPU) and trains one
    warm-up epoch on `orders[0]`; then every variant trains one whole epoch per order, the variants' order
    rotated each time, so that none always runs first. Returns per variant its epochs' seconds and mean losses,
    the error of a variant that could not be captured or run, and its capture + warm-up seconds."""
    graphs, errors, setup_s = {}, {}, {}
    for name, setting in settings.items():
        t0 = time.perf_counter()
        with setting():
            tr.graph = None
            try:
                if tr.use_graphs:
                    tr.capture_graph()
                _epoch(tr, orders[0], budgeted=True)  # warm-up, and the variant runs at all
            except Exception as e:  # noqa: BLE001 - reported by the caller
                errors[name] = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
                continue
            graphs[name] = (tr.graph, tr.loss_rows)
        setup_s[name] = time.perf_counter() - t0
    times = {k: [] for k in graphs}
    losses = {k: [] for k in graphs}
    names = list(graphs)
    for i, order in enumerate(orders):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            tr.graph, tr.loss_rows = graphs[name]
            with settings[name]():  # also for an eager step above the budget
                seconds, loss, _ = _epoch(tr, order, budgeted=tr.loss_rows is not None)
            times[name].append(seconds)
            losses[name].append(loss)
    return times, losses, errors, setup_s


def measure(model: str, args) -> dict:
    tr = trainer_for(model, args, seed=0, layout="padded")
    config = config_name(model, args)
    rs = tr.train_rows
    orders = [tr.epoch_order() for _ in range(args.rounds)]
    if tr.use_graphs:
        tr.capture_graph()
        budget = tr.loss_rows
        with_budget = tr.graph
        with no_budget():  # the same capture, all B*N positions in the loss
            tr.graph = None
            tr.capture_graph()
        without = tr.graph
        graphs = {"with budget": (with_budget, budget), "all positions": (without, None)}
    else:  # CPU: no graph; the eager step itself has no budget, so this only runs the code path
        budget = loss_rows.split_budget(rs, tr.cfg.batch_size)
        graphs = {"with budget": (None, None), "all positions": (None, None)}
    times = {k: [] for k in graphs}
    losses = {k: [] for k in graphs}
    eager = 0
    _epoch(tr, orders[0], budgeted=False)  # warm-up
    for i, order in enumerate(orders):  # the variant that trains on an order second has seen it: alternate
        for name, (graph, rows) in list(graphs.items())[:: 1 if i % 2 == 0 else -1]:
            tr.graph, tr.loss_rows = graph, rows
            seconds, loss, n_eager = _epoch(tr, order, budgeted=rows is not None)
            times[name].append(seconds)
            losses[name].append(loss)
            eager += n_eager if rows is not None else 0
    steps = orders[0].numel() // tr.cfg.batch_size
    supervised = int((rs.padded_next_ids[: rs.num_users] != 0).sum())
    full = rs.num_users * rs.pad_width
    out = {
        "model": model,
        "config": config,
        "graph": tr.use_graphs,
        "batch_positions": tr.cfg.batch_size * rs.pad_width,
        "budget": budget,
        "padded_share": 1 - supervised / full,
        "steps_per_epoch": steps,
        "eager_steps_above_budget": eager,
        "epochs_timed": args.rounds,
    }
    for name in graphs:
        med = statistics.median(times[name])
        out[name] = {"epoch_s": med, "step_ms": 1e3 * med / steps, "mean_loss": statistics.mean(losses[name])}
    return out


def check(model: str, args) -> dict:
    """Loss and gradients with the budget against all positions, on `--check-batches` batches, in fp32.

    TF32 is off here: its 10-bit products round the slightly different sums of the two variants (their
    matrix products have different row counts, hence different kernels and orders) to differences of a
    few 1e-4, which would hide nothing but make the tolerance meaningless. A wrong compaction moves the
    loss or a gradient by far more than either tolerance."""
    tr = trainer_for(model, args, seed=0, layout="padded", tf32=False)
    config = config_name(model, args)
    rs, B = tr.train_rows, tr.cfg.batch_size
    budget = loss_rows.split_budget(rs, B) or B * rs.pad_width
    order = tr.epoch_order()
    counts = loss_rows.split_step_counts(rs, order, B)
    found = []
    for s in range(min(args.check_batches, len(counts))):
        index = order[s * B : (s + 1) * B].to(tr.device)
        rows = max(counts[s], 1) if counts[s] > budget else budget  # a batch above it: its own count
        found.append(loss_rows.compare_with_all_positions(tr, index, rows))
    return {
        "model": model,
        "config": config,
        "device": str(tr.device),
        "budget": budget,
        "batches": len(found),
        "loss_rel_diff": max(f["loss_rel_diff"] for f in found),
        "grad_rel_diff": max(f["grad_rel_diff"] for f in found),
        "inputs_unchanged": all(f["inputs_unchanged"] for f in found),
    }


def check_markdown(rows: list[dict], machine: str) -> str:
    lines = [
        f"# The loss in its row budget against all positions, negatives fixed, fp32 with TF32 off ({machine})",
        "",
        "| model | budget | batches | loss, largest relative difference | gradients, largest relative difference "
        "| inputs unchanged | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['budget']} | {r['batches']} | {r['loss_rel_diff']:.1e} | {r['grad_rel_diff']:.1e} "
            f"| {'yes' if r['inputs_unchanged'] else 'NO'} | {'PASS' if _check_ok(r) else 'FAIL'} |"
        )
    return "\n".join(lines) + "\n"


def _check_ok(row: dict) -> bool:
    return row["loss_rel_diff"] <= 1e-5 and row["grad_rel_diff"] <= 1e-4 and row["inputs_unchanged"]


def accuracy(model: str, seeds: list[int], args) -> dict:
    """Test HR@10 / NDCG@10 of `seeds` trained with the loss's row budget and without it."""
    from hstu_tutorial.training.multi_seed import mean_std, train_seeds

    sets = {"exp_dir": args.exp_dir, **({"num_epochs": 2} if args.smoke else {})}
    out = {"model": model, "config": config_name(model, args), "seeds": seeds}
    for variant in ("with budget", "all positions"):
        name = f"loss-rows-{model}-{variant.replace(' ', '-')}"
        with no_budget() if variant == "all positions" else contextlib.nullcontext():
            res = train_seeds(config_for(model, args, name=name, **sets), seeds, verbose=False, write=False)
        per_seed = {s: r["reference_protocol"]["test_mean"] for s, r in zip(seeds, res["runs"])}
        out[variant] = {
            "per_seed": {s: {k: m[k] for k in ("hr@10", "ndcg@10")} for s, m in per_seed.items()},
            **{k: mean_std([m[k] for m in per_seed.values()]) for k in ("hr@10", "ndcg@10")},
            "eager_steps_above_budget": sum(r["eager_steps_above_budget"] for r in res["runs"]),
        }
    return out


def accuracy_markdown(rows: list[dict], machine: str) -> str:
    lines = [f"# Test HR@10 / NDCG@10 with and without the loss's row budget ({machine})", ""]
    for r in rows:
        lines += [f"{r['model']} ({r['config']}), mean of the last epochs:", ""]
        lines += ["| seed | with budget | all positions |", "|---|---|---|"]
        a, b = r["with budget"], r["all positions"]
        for s in r["seeds"]:
            x, y = a["per_seed"][s], b["per_seed"][s]
            lines.append(
                f"| {s} | {x['hr@10']:.4f} / {x['ndcg@10']:.4f} | {y['hr@10']:.4f} / {y['ndcg@10']:.4f} |"
            )

        def cell(v):
            m, sd = v
            return f"{m:.4f}" + ("" if sd is None else f" ± {sd:.4f}")

        lines.append(
            f"| mean ± std | {cell(a['hr@10'])} / {cell(a['ndcg@10'])} | {cell(b['hr@10'])} / {cell(b['ndcg@10'])} |"
        )
        lines += ["", f"Steps run eagerly above the budget: {a['eager_steps_above_budget']}.", ""]
    return "\n".join(lines) + "\n"


def markdown(rows: list[dict], machine: str) -> str:
    lines = [
        f"# The graph step's loss on the supervised positions only ({machine})",
        "",
        "| model | positions per batch | budget | padded share | step ms, all positions | step ms, budget | "
        "saved | eager steps (above budget) | mean loss, all / budget |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        a, b = r["all positions"], r["with budget"]
        lines.append(
            f"| {r['model']} | {r['batch_positions']} | {r['budget']} | {r['padded_share']:.0%} | "
            f"{a['step_ms']:.3f} | {b['step_ms']:.3f} | {1 - b['step_ms'] / a['step_ms']:.1%} | "
            f"{r['eager_steps_above_budget']} of {r['steps_per_epoch'] * r['epochs_timed']} | "
            f"{a['mean_loss']:.4f} / {b['mean_loss']:.4f} |"
        )
    lines += ["", "Step ms: median over the timed epochs of an epoch's time / its steps (graph replays)."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default="", help="the ML-1M folder, e.g. data/ml-1m-u2999")
    ap.add_argument("--models", default="hstu,sasrec")
    ap.add_argument("--rounds", type=int, default=7, help="epochs timed per variant, alternating")
    ap.add_argument("--smoke", action="store_true", help="CPU, synthetic data, logic only")
    ap.add_argument("--out", default="", help="write bench_loss_rows.json and .md here")
    ap.add_argument("--accuracy", default="", metavar="SEEDS", help="train these seeds with and without")
    ap.add_argument("--check", action="store_true", help="loss and gradients against all positions")
    ap.add_argument("--check-batches", type=int, default=8, help="--check: batches compared per model")
    ap.add_argument("--fallback", action="store_true", help="a short run with about half the batches eager")
    ap.add_argument("--fallback-epochs", type=int, default=3, help="--fallback: epochs trained")
    ap.add_argument("--exp-dir", default="/tmp/bench-loss-rows", help="--accuracy: where the runs go")
    args = ap.parse_args(argv)
    if args.smoke:
        args.rounds = min(args.rounds, 2)
    info = machine_info()
    machine = f"{info['device']}, {info['date_utc'][:10]}"
    status = 0
    if args.check:
        rows = [check(m, args) for m in args.models.split(",")]
        text, stem = check_markdown(rows, machine), "bench_loss_rows_check"
        status = 0 if all(_check_ok(r) for r in rows) else 1
    elif args.fallback:
        rows = [fallback(m, args) for m in args.models.split(",")]
        text, stem = fallback_markdown(rows, machine), "bench_loss_rows_fallback"
        status = 0 if all(_fallback_ok(r) for r in rows) else 1
    elif args.accuracy:
        seeds = [int(s) for s in args.accuracy.split(",")]
        rows = [accuracy(m, seeds, args) for m in args.models.split(",")]
        text, stem = accuracy_markdown(rows, machine), "bench_loss_rows_accuracy"
    else:
        rows = [measure(m, args) for m in args.models.split(",")]
        text, stem = markdown(rows, machine), "bench_loss_rows"
    print(text)
    save_results({"machine": info, "rows": rows}, stem, [args.out], text)
    return status


if __name__ == "__main__":
    sys.exit(main())
