"""The command line: `hstu-train` / `python -m hstu_tutorial.train` arguments and the `main` entry point."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from hstu_tutorial.errors import ConfigError
from hstu_tutorial.training.config import list_configs, load_config, parse_overrides
from hstu_tutorial.training.gin_config import load_gin_config
from hstu_tutorial.training.report import results_markdown
from hstu_tutorial.training.trainer import train

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """`hstu-train` / `python -m hstu_tutorial.train`: returns the exit status (2: a configuration error)."""
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
    parser.add_argument("--resume", help="continue from a checkpoint file or run folder")
    parser.add_argument("--list", action="store_true", help="list the bundled configs and exit")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(list_configs()))
        return 0
    try:
        overrides = parse_overrides(args.set)
        if args.resume:
            overrides["resume"] = args.resume
        if args.gin_config_file:
            cfg = load_gin_config(args.gin_config_file, overrides, config=args.config)
        else:
            cfg = load_config(args.config, overrides)
        if args.print_config:
            for k, v in cfg.to_dict().items():
                print(f"{k} = {json.dumps(v)}")
            return 0
        results = train(cfg)
        trainer = results.get("trainer")
        if trainer is not None and trainer.world > 1:
            import torch.distributed as dist

            dist.barrier()
            dist.destroy_process_group()
            if trainer.rank != 0:
                return 0
    except ConfigError as err:
        print(f"hstu-train: configuration error: {err}", file=sys.stderr)
        return 2
    print(results_markdown(results))
    print(f"results: {results['run_dir']}/results.json")
    return 130 if results["status"] == "interrupted" else 0
