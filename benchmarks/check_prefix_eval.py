"""Validation and test ranks from one pass (training/prefix_eval.py) against separate passes, on the GPU.

    PYTHONPATH=. python3 benchmarks/check_prefix_eval.py --data-dir data/ml-1m-u2999 [--steps 300]
    PYTHONPATH=. python benchmarks/check_prefix_eval.py --smoke      # CPU, synthetic data

Builds the SASRec trainer of the ML-1M config, trains `--steps` steps (so the weights are not the random
initialisation), then evaluates both splits three ways: the trainer's evaluation (one pass, replayed as a CUDA
graph from its third call on), `prefix_eval.paired_ranks` eagerly, and each split on its own
(`Trainer.ranks`). Reports how many users each split has, how many validation users the test pass covers, and
how many users' ranks differ between one pass and separate passes: the test users, the validation users the test
pass covers, and the others, whose queries come from a pass of their own over fewer histories.

A GPU kernel may round a row differently when the batch around it has another size (cuDNN and cuBLAS pick their
kernels by shape), so the control evaluates the validation split separately twice, once in one batch and once in
batches the size of that last pass, and counts the users whose ranks differ. PASS: weights and catalogue
unchanged, no test user and no covered validation user differs, and the others differ no more often than in the
control (plus one) and by no more places than there. Exit 1 on a failure.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def compare(one_pass: torch.Tensor, separate: torch.Tensor) -> dict:
    diff = (one_pass - separate).abs()
    return {
        "users": int(separate.numel()),
        "ranks_differ": int((diff > 0).sum()),
        "max_rank_diff": int(diff.max()) if diff.numel() else 0,
    }


def run(config: str, overrides: dict, steps: int) -> dict:
    from hstu_tutorial.metrics import batch_ranks
    from hstu_tutorial.train import Trainer, load_config
    from hstu_tutorial.training.prefix_eval import paired_ranks

    tr = Trainer(load_config(config, overrides), verbose=False)
    rs = tr.splits["train"]
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        tr.step(torch.randperm(rs.num_users, generator=g)[: tr.cfg.batch_size].to(tr.device), use_graph=False)
    before = [p.detach().clone() for p in tr.model.parameters()] + [tr.catalogue.clone()]
    pairs = tr._pairs()
    if pairs is None:
        raise SystemExit(f"{config}: no validation user is covered by the test pass; nothing to check")
    results = []
    for _ in range(3):  # eager, captured, replayed
        tr.evaluate(("valid", "test"))
        results.append({s: r.clone() for s, r in tr.last_ranks.items()})
    eager = paired_ranks(
        tr.model,
        tr.splits["valid"],
        tr.splits["test"],
        pairs,
        tr.catalogue,
        tr.dataset.num_items,
        tr.autocast,
    )
    separate = {s: tr.ranks(s) for s in ("valid", "test")}
    # control: the validation split alone, in batches the size of the uncovered users' pass
    small = max(1, min(pairs.rest.numel(), tr.cfg.eval_batch_size))
    resized = batch_ranks(
        tr.model, tr.splits["valid"].batches(small), tr.catalogue, tr.dataset.num_items, autocast=tr.autocast
    )
    control = compare(resized, separate["valid"])
    covered = torch.zeros(tr.splits["valid"].num_users, dtype=torch.bool, device=tr.device)
    covered[pairs.valid_of_test[pairs.valid_of_test < covered.numel()]] = True
    after = [p.detach() for p in tr.model.parameters()] + [tr.catalogue]
    rows = []
    for label, got in [(f"trainer, call {i + 1}", r) for i, r in enumerate(results)] + [
        ("paired_ranks, eager", dict(zip(("valid", "test"), eager)))
    ]:
        rows.append({"what": label, "split": "test", **compare(got["test"], separate["test"])})
        for part, mask in (("valid, covered", covered), ("valid, own pass", ~covered)):
            rows.append(
                {"what": label, "split": part, **compare(got["valid"][mask], separate["valid"][mask])}
            )
    unchanged = all(torch.equal(a, b) for a, b in zip(before, after))

    def within(r):
        if r["split"] != "valid, own pass":
            return r["ranks_differ"] == 0
        return r["ranks_differ"] <= control["ranks_differ"] + 1 and r["max_rank_diff"] <= max(
            1, control["max_rank_diff"]
        )

    ok = unchanged and all(within(r) for r in rows)
    return {
        "device": torch.cuda.get_device_name() if tr.device.type == "cuda" else "CPU",
        "graphs": tr._eval_graphs is not None,
        "covered": pairs.covered,
        "valid_users": tr.splits["valid"].num_users,
        "rows": rows,
        "control": {"batch": small, **control},
        "unchanged": unchanged,
        "ok": ok,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default="data/ml-1m-u2999")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--smoke", action="store_true", help="CPU, synthetic data, a few steps")
    args = ap.parse_args()
    common = dict(progress=False, tensorboard=False, save_checkpoints=False)
    if args.smoke:
        config, overrides, steps = "synthetic/sasrec-small", dict(common, max_seq_len=45, device="cpu"), 3
    else:
        config = "ml-1m/sasrec-sampled-softmax-n128-final"
        overrides, steps = dict(common, data_dir=args.data_dir), args.steps
    r = run(config, overrides, steps)
    print(
        f"# check_prefix_eval: {r['device']}, {config}, evaluation graphs: {r['graphs']}; the test pass covers "
        f"{r['covered']} of {r['valid_users']} validation users"
    )
    print("| evaluation | split | users | ranks that differ from separate passes | largest difference |")
    print("|---|---|---|---|---|")
    for row in r["rows"]:
        print(
            f"| {row['what']} | {row['split']} | {row['users']} | {row['ranks_differ']} | {row['max_rank_diff']} |"
        )
    c = r["control"]
    print(
        f"control, validation alone in batches of {c['batch']} against one batch: {c['ranks_differ']} of "
        f"{c['users']} users' ranks differ, by at most {c['max_rank_diff']}"
    )
    print(f"weights and catalogue unchanged: {r['unchanged']}")
    print("PASS" if r["ok"] else "FAIL")
    return 0 if r["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
