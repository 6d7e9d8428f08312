"""The MovieLens-1M result files notebooks 02 and 06 plot: HSTU and SASRec, the full recipe, four seeds.

    PYTHONPATH=. python benchmarks/collect_ml1m_results.py --data-dir data/ml-1m-u2999

trains `ml-1m/hstu-sampled-softmax-n128-final` and `ml-1m/sasrec-sampled-softmax-n128-final` with seeds
42, 1, 2, 3 (101 epochs, validation and test evaluated after every epoch) on one dataset loaded once, and
writes to `--out` (default benchmarks/results/h200_2026-12-01/ml1m/):

    runs.json             per run: model, seed, machine, date, config and overrides, metrics, timing, curves
    buckets.csv           per model x seed x bucket kind x bucket: users, hr@10, ndcg@10 (edges in lo, hi)
    attention.json        seed-42 HSTU: three users' maps over their last 12 items, with titles, and
                          per layer x head statistics over all test users
    sampled_vs_full.json  seed-42 HSTU: full softmax loss vs sampled (20 draws) vs rescaled by (C-1)/R

Only aggregates and the titles of the films the attention figure shows: no ratings, no per-user rows.
`--smoke`: the same pipeline on the synthetic dataset, 2 epochs, 2 seeds, on the CPU, into a temporary
folder (or `--out`); tests/test_results.py runs it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from hstu_tutorial import results as R  # noqa: E402
from hstu_tutorial.data import get_reco_dataset  # noqa: E402
from hstu_tutorial.train import load_config  # noqa: E402

SMOKE_CONFIGS = {"HSTU": "synthetic/hstu-small", "SASRec": "synthetic/sasrec-small"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--data-dir", default="data/ml-1m-u2999", help="folder with ML-1M's ratings/movies/users .dat"
    )
    p.add_argument("--out", default=None, help=f"output folder (default {R.DEFAULT_DIR.relative_to(ROOT)})")
    p.add_argument("--seeds", default=",".join(map(str, R.SEEDS)), help="comma-separated seeds")
    p.add_argument("--epochs", type=int, default=None, help="override num_epochs (default: the config's 101)")
    p.add_argument("--extra", action="append", default=[], help="KEY=VALUE config override for every run")
    p.add_argument("--smoke", action="store_true", help="synthetic data, 2 epochs, 2 seeds, CPU, temp folder")
    return p.parse_args(argv)


def main(argv=None) -> Path:
    args = parse_args(argv)
    from hstu_tutorial.train import parse_overrides

    seeds = [int(s) for s in args.seeds.split(",") if s]
    overrides = {"progress": False, "tensorboard": False, "save_checkpoints": False}
    overrides.update(parse_overrides(args.extra))
    if args.smoke:
        configs = SMOKE_CONFIGS
        seeds = seeds if args.seeds != ",".join(map(str, R.SEEDS)) else [42, 1]
        overrides.update(num_epochs=args.epochs or 2, device="cpu")
        out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="ml1m-results-smoke-"))
    else:
        configs = R.CONFIGS
        if args.epochs:
            overrides["num_epochs"] = args.epochs
        overrides["data_dir"] = args.data_dir
        out = Path(args.out) if args.out else R.DEFAULT_DIR
    exp_dir = tempfile.mkdtemp(prefix="ml1m-results-exps-")  # run folders (results.json) are not kept
    overrides["exp_dir"] = exp_dir
    out.mkdir(parents=True, exist_ok=True)

    cfg = load_config(configs["HSTU"], overrides={k: v for k, v in overrides.items()})
    t0 = time.perf_counter()
    ds = get_reco_dataset(
        cfg.dataset,
        cfg.max_seq_len,
        cfg.data_dir or None,
        protocol=cfg.protocol,
        stable_sort=cfg.stable_sort,
        synthetic_size=cfg.synthetic_size,
        verbose=False,
    )
    print(
        f"dataset {ds.name}: {ds.num_users} users, {ds.num_items} items, loaded in {time.perf_counter() - t0:.1f} s"
    )
    print(f"machine: {R.machine()}")
    print(f"{len(configs)} models x {len(seeds)} seeds, overrides {overrides}")
    runs, buckets, hstu = R.collect(ds, configs, seeds, overrides, keep=("HSTU", seeds[0]))
    (out / "runs.json").write_text(
        json.dumps(
            {"date": R.DATE, "dataset": ds.name, "data_dir": overrides.get("data_dir"), "runs": runs},
            indent=1,
        )
    )
    buckets.to_csv(out / "buckets.csv", index=False, float_format="%.6g")

    model = hstu.model
    users = R.attention_users(ds)
    t1 = time.perf_counter()
    attention = {
        "seed": seeds[0],
        "record": R.attention_record(model, ds, users, max_items=12),
        "summary": R.attention_summary(model, ds, "test"),
    }
    (out / "attention.json").write_text(json.dumps(attention, indent=1))
    print(
        f"attention: users {users}, statistics over {attention['summary']['users']} users in "
        f"{time.perf_counter() - t1:.1f} s"
    )
    svf = {"seed": seeds[0], **R.sampled_vs_full(hstu, num_users=32, draws=20, seed=0)}
    (out / "sampled_vs_full.json").write_text(json.dumps(svf, indent=1))
    print(
        f"sampled vs full: full {svf['full']:.3f}, sampled {svf['sampled_mean']:.3f}, "
        f"rescaled {svf['rescaled_mean']:.3f}"
    )
    print(
        f"wrote {', '.join(sorted(p.name for p in out.iterdir()))} to {out} in {time.perf_counter() - t0:.0f} s"
    )
    return out


if __name__ == "__main__":
    main()
