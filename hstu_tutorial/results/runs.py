"""Training every (model, seed), the runs.json record of a run, and reading the saved files back."""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from hstu_tutorial.results.buckets import bucket_table

ROOT = Path(__file__).resolve().parents[2]
DATE = "2026-12-01"
DEFAULT_DIR = ROOT / "benchmarks" / "results" / f"h200_{DATE}" / "ml1m"
CONFIGS = {
    "HSTU": "ml-1m/hstu-sampled-softmax-n128-final",
    "SASRec": "ml-1m/sasrec-sampled-softmax-n128-final",
}
SEEDS = (42, 1, 2, 3)


def machine() -> dict:
    """The machine a run is on: GPU (or CPU) name, torch, triton, CUDA, Python."""
    from hstu_tutorial.training.report import device_name

    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return {
        "device": device_name(dev),
        "torch": torch.__version__,
        "triton": triton_version,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
    }


def run_record(model: str, seed: int, results: dict, overrides: dict, date: str = DATE) -> dict:
    """One run of `train` as a runs.json entry: metrics, timing and per-epoch curves (no per-user data)."""
    hist = results["history"]
    ref = results.get("reference_protocol", {})
    best = results.get("best_by_valid", {})
    return {
        "model": model,
        "seed": seed,
        "config": results["name"],
        "overrides": overrides,
        "date": date,
        "machine": {**machine(), "device": results["device"]},
        "attention_impl": results["attention_impl"],
        "epochs_run": results["epochs_run"],
        "reference_protocol": {
            "epochs": ref.get("epochs"),
            "test_mean": ref.get("test_mean"),
            "test_final": ref.get("test_final"),
        },
        "best_by_valid": {k: best.get(k) for k in ("epoch", "valid", "test")},
        "timing": {
            k: results["timing"][k] for k in ("setup_s", "train_s", "eval_s", "train_eval_s", "s_per_epoch")
        },
        "curves": {
            "epoch": [r["epoch"] for r in hist],
            "loss": [round(r["loss"], 6) for r in hist],
            **{
                f"{s}/{m}": [round(r[s][m], 6) for r in hist]
                for s in ("valid", "test")
                for m in ("hr@10", "ndcg@10")
            },
        },
    }


def collect(
    dataset,
    configs: dict[str, str] | None = None,
    seeds: Sequence[int] = SEEDS,
    overrides: dict | None = None,
    keep: tuple[str, int] | None = ("HSTU", 42),
    log: Callable[[str], object] = print,
):
    """Train every (model, seed) on `dataset`; returns (runs list, buckets DataFrame, kept trainer or None).

    `configs`: {model name: config name}; `overrides`: config keys for every run; `keep`: the (model, seed)
    whose Trainer is returned (for the attention maps and the loss comparison); the others are freed.
    """
    import pandas as pd

    from hstu_tutorial.metrics import item_popularity
    from hstu_tutorial.train import train

    configs = configs or CONFIGS
    overrides = dict(overrides or {})
    popularity = item_popularity(dataset, "train").numpy()
    runs, tables, kept = [], [], None
    for model, config in configs.items():
        for seed in seeds:
            t0 = time.perf_counter()
            res = train(config, dataset=dataset, verbose=False, seed=seed, **overrides)
            trainer = res.pop("trainer")
            runs.append(run_record(model, seed, res, overrides))
            table = bucket_table(trainer.per_user_ranks("test"), popularity)
            tables.append(table.assign(model=model, seed=seed))
            ref = res["reference_protocol"]["test_mean"]
            log(
                f"{model} seed {seed}: {res['epochs_run']} epochs in {time.perf_counter() - t0:.0f} s, "
                f"test HR@10 {ref['hr@10']:.4f} NDCG@10 {ref['ndcg@10']:.4f} (mean of the last epochs)"
            )
            if keep == (model, seed):
                kept = trainer
            else:
                del trainer
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
    buckets = pd.concat(tables, ignore_index=True)
    cols = ["model", "seed", "kind", "bucket", "lo", "hi", "users", "hr@10", "ndcg@10"]
    return runs, buckets[cols], kept


@dataclass
class ML1MResults:
    """The saved results as frames: `runs` (one row per run), `curves` (one row per run and epoch),
    `buckets`, `attention` and `sampled_vs_full` (dicts, or None), and the `machine` and `date` labels."""

    folder: Path
    runs: object
    curves: object
    buckets: object
    attention: dict | None
    sampled_vs_full: dict | None
    machine: str
    date: str

    @property
    def label(self) -> str:
        """'NVIDIA H200, 2026-12-01, 4 seeds': what a figure drawn from these files says it shows."""
        n = self.runs["seed"].nunique()
        return f"{self.machine}, {self.date}, {n} seed{'s' if n != 1 else ''}"


def runs_frames(runs: list[dict]):
    """runs.json entries -> (runs DataFrame, curves DataFrame)."""
    import pandas as pd

    rows, curves = [], []
    for r in runs:
        ref = r["reference_protocol"]
        e0, e1 = ref.get("epochs") or (None, None)
        row = {"model": r["model"], "seed": r["seed"], "epochs": r["epochs_run"], "window": f"{e0}-{e1}"}
        row.update({f"{k}": v for k, v in (ref.get("test_mean") or {}).items()})
        row.update({f"final {k}": v for k, v in (ref.get("test_final") or {}).items()})
        row["best valid epoch"] = r["best_by_valid"].get("epoch")
        row["seconds"] = r["timing"]["train_eval_s"]
        rows.append(row)
        c = pd.DataFrame(r["curves"]).assign(model=r["model"], seed=r["seed"])
        curves.append(c)
    return pd.DataFrame(rows), pd.concat(curves, ignore_index=True) if curves else pd.DataFrame()


def results_from_runs(runs: list[dict], buckets, attention=None, sampled=None, folder=None) -> ML1MResults:
    """Runs recorded in this process (`collect`, `run_record`) as an ML1MResults, like the saved files."""
    runs_df, curves = runs_frames(runs)
    device = runs[0]["machine"]["device"] if runs else "?"
    return ML1MResults(
        Path(folder or "."), runs_df, curves, buckets, attention, sampled, device, time.strftime("%Y-%m-%d")
    )


def load_ml1m_results(folder=None, verbose: bool = True) -> ML1MResults | None:
    """The files `benchmarks/collect_ml1m_results.py` wrote to `folder` (default: the NVIDIA H200 run of
    2026-12-01), or None, with one line saying so, when runs.json is not there."""
    import pandas as pd

    folder = Path(folder) if folder is not None else DEFAULT_DIR
    if not (folder / "runs.json").is_file():
        if verbose:
            print(
                f"no saved GPU results in {_shown(folder)} (run benchmarks/collect_ml1m_results.py on a GPU)"
            )
        return None
    data = json.loads((folder / "runs.json").read_text())
    runs, curves = runs_frames(data["runs"])
    read = lambda name: json.loads((folder / name).read_text()) if (folder / name).is_file() else None  # noqa: E731
    buckets = pd.read_csv(folder / "buckets.csv") if (folder / "buckets.csv").is_file() else None
    m = data["runs"][0]["machine"]["device"] if data["runs"] else "?"
    return ML1MResults(
        folder,
        runs,
        curves,
        buckets,
        read("attention.json"),
        read("sampled_vs_full.json"),
        m,
        data.get("date", "?"),
    )


def _shown(folder: Path) -> str:
    try:
        return str(folder.resolve().relative_to(ROOT))
    except ValueError:
        return str(folder)
