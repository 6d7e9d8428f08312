"""`python -m hstu_tutorial.train`: the trainer's command line, and the names the trainer has always exported.

    python -m hstu_tutorial.train --config ml-1m/hstu-sampled-softmax-n128-final \
        --set data_dir=data/ml-1m-u2999
    python -m hstu_tutorial.train --config synthetic/hstu-small --set num_epochs=3 --set seed=1
    python -m hstu_tutorial.train --config synthetic/hstu-small --seeds 42,1,2,3   # 4 runs, one process
    hstu-train --list
    torchrun --standalone --nproc_per_node=2 -m hstu_tutorial.train --config ...   # DDP, one GPU per rank

The code lives in the package `hstu_tutorial.training` (one concern per module; see its docstring).
"""

import sys

if __name__ == "__main__":  # before torch is imported: the kernels compile in other processes meanwhile
    from hstu_tutorial.precompile import start_for_cli

    start_for_cli(sys.argv[1:])

from hstu_tutorial.errors import ConfigError
from hstu_tutorial.training.cli import main
from hstu_tutorial.training.config import (
    CONFIG_DIR,
    TrainConfig,
    config_from_dict,
    list_configs,
    load_config,
    parse_overrides,
    resolve_config_path,
)
from hstu_tutorial.training.distributed import all_reduce_mean, rank_steps, setup_distributed
from hstu_tutorial.training.model import build_model
from hstu_tutorial.training.multi_seed import train_seeds
from hstu_tutorial.training.report import (
    PAPER_ML1M,
    REFERENCE_ML1M_U2999,
    REFERENCE_WINDOW,
    results_markdown,
)
from hstu_tutorial.training.resident import ResidentSplit
from hstu_tutorial.training.trainer import Trainer, train

__all__ = [
    "REFERENCE_ML1M_U2999",
    "CONFIG_DIR",
    "PAPER_ML1M",
    "REFERENCE_WINDOW",
    "ConfigError",
    "ResidentSplit",
    "TrainConfig",
    "Trainer",
    "all_reduce_mean",
    "build_model",
    "config_from_dict",
    "list_configs",
    "load_config",
    "main",
    "parse_overrides",
    "rank_steps",
    "resolve_config_path",
    "results_markdown",
    "setup_distributed",
    "train",
    "train_seeds",
]

if __name__ == "__main__":
    sys.exit(main())
