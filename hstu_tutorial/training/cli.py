"""The command line: `hstu-train` / `python -m hstu_tutorial.train` arguments and the `main` entry point.

Bad input (a config, a `--set` value, a dataset, a checkpoint: every `hstu_tutorial.errors.HSTUError`)
is answered with one line on stderr, `error: <what is wrong and what to do>`, and exit status 2, before
any run folder is made. `--debug` shows the traceback instead. Anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from hstu_tutorial.errors import ConfigError, HSTUError
from hstu_tutorial.progress import hooks as progress_hooks
from hstu_tutorial.training.config import (
    TrainConfig,
    config_from_dict,
    list_configs,
    load_config,
    parse_overrides,
)
from hstu_tutorial.training.gin_config import load_gin_config
from hstu_tutorial.training.multi_seed import parse_seeds, seeds_markdown
from hstu_tutorial.training.report import results_markdown

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hstu-train",
        description="Train HSTU or SASRec with a TOML config (see hstu_tutorial/configs/).",
    )
    parser.add_argument(
        "--config", help="a TOML file, or a bundled name such as ml-1m/hstu-sampled-softmax-n128-final"
    )
    parser.add_argument(  # the official generative-recommenders configs (training/gin_config.py)
        "--gin_config_file",
        help="an official generative-recommenders gin file (or its name: the bundled config is used)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key (repeatable), e.g. --set num_epochs=3",
    )
    parser.add_argument(
        "--resume",
        help="continue from a run folder or its ckpt_last.pt (without --config: the checkpoint's config)",
    )
    parser.add_argument(
        "--init-from", metavar="CKPT", help="start a new run from these weights, e.g. a ckpt_best.pt"
    )
    parser.add_argument(
        "--seeds",
        metavar="S1,S2,...",
        help="train one run per seed in this process, side by side (run folders <name>-s<seed>), "
        "then a mean ± std table in <name>-seeds/",
    )
    parser.add_argument("--list", action="store_true", help="list the bundled configs and exit")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    return parser


def resolve_cli_config(config: str | None, overrides: dict) -> TrainConfig:
    """The run's config: `--config` plus overrides; with `--resume` and no `--config`, the checkpoint's."""
    if config is None and overrides.get("resume"):
        from hstu_tutorial.training.checkpoints import read_checkpoint

        state, _ = read_checkpoint(overrides["resume"], "resume")
        saved = {k: v for k, v in (state.get("config") or {}).items() if k in TrainConfig.keys()}
        base = config_from_dict(saved, source=f"the config saved in {overrides['resume']}")
        return config_from_dict(overrides, base, source="--set").validate()
    return load_config(config, overrides)


def main(argv: Sequence[str] | None = None) -> int:
    """`hstu-train` / `python -m hstu_tutorial.train`: returns the exit status (2: bad input)."""
    args = _parser().parse_args(argv)
    if not (args.list or args.print_config):  # `python -m hstu_tutorial.train` started it already
        from hstu_tutorial.precompile import start_for_cli

        start_for_cli(sys.argv[1:] if argv is None else list(argv))
    if args.list:
        print("\n".join(list_configs()))
        return 0
    try:
        seeds = parse_seeds(args.seeds) if args.seeds is not None else None
        if seeds is not None and args.resume:
            raise ConfigError(
                "--seeds starts new runs and cannot be combined with --resume: resume each seed's run on "
                "its own, e.g. --resume exps/<dataset>-l<N>/<name>-s<seed>"
            )
        overrides = parse_overrides(args.set)
        if args.resume:
            overrides["resume"] = args.resume
        if args.init_from:
            overrides["init_from"] = args.init_from
        if args.gin_config_file:
            cfg = load_gin_config(args.gin_config_file, overrides, config=args.config)
        else:
            cfg = resolve_cli_config(args.config, overrides)
        if args.print_config:
            for k, v in cfg.to_dict().items():
                print(f"{k} = {json.dumps(v)}")
            return 0
        if seeds is not None:
            return _train_seeds(cfg, seeds)
        from hstu_tutorial.training.trainer import train  # torch and the models: only for a real run

        results = train(cfg)
        trainer = results.get("trainer")
        if trainer is not None and trainer.world > 1:
            import torch.distributed as dist

            dist.barrier()
            dist.destroy_process_group()
            if trainer.rank != 0:
                return 0
    except HSTUError as err:
        if args.debug:
            raise
        message = " ".join(str(err).split())  # one line, whatever the message's layout
        print(f"error: {message}", file=sys.stderr)
        return 2
    progress_hooks.training_finished(results)  # a completed run ticks practice.train_script (checklist)
    print(results_markdown(results))
    print(f"results: {results['run_dir']}/results.json")
    if results.get("run_dir"):
        from hstu_tutorial.training.run_files import run_listing

        print(run_listing(results["run_dir"]))
    return 130 if results["status"] == "interrupted" else 0


def _train_seeds(cfg: TrainConfig, seeds: list[int]) -> int:
    """`--seeds`: every seed's run side by side, then the mean ± std table (exit 130 when interrupted)."""
    from hstu_tutorial.training.multi_seed import train_seeds

    out = train_seeds(cfg, seeds)
    runs = [r for r in out["runs"] if r is not None]
    for results in runs:
        progress_hooks.training_finished(results)
    print(seeds_markdown(out["summary"]))
    for results in runs:
        print(f"results: {results['run_dir']}/results.json")
    print(f"seeds: {out['summary_dir']}/seeds.json")
    return 130 if any(r["status"] == "interrupted" for r in runs) or len(runs) < len(seeds) else 0
