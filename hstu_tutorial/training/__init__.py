"""Train and evaluate HSTU or SASRec on a leave-one-out split: one concern per module.

    config       TrainConfig, TOML files, `--set` overrides, bundled config names
    resident     the device-resident split and its two batch layouts (jagged, padded)
    model        the device and the encoder a config asks for
    trainer      Trainer (the step, the epoch loop, evaluation) and train()
    startup      what a run does once before its first epoch, and where that set-up time goes
    epoch_end    after each epoch: best epoch, checkpoints, TensorBoard, early stopping
    optimizer    torch's AdamW without importing torch._dynamo (the compiler) on a run that compiles nothing
    cuda_graph   the training step captured and replayed as a CUDA graph
    distributed  torchrun: process group, each rank's steps, DistributedDataParallel
    checkpoints  resumable checkpoints and the best weights
    report       results dict, results.md, the paper's tables, TensorBoard
    run_files    the run folder's files: writing them, the listing, reading runs and ranks back
    experiment   the reproducible experiment record (experiment.json / .md)
    multi_seed   several seeds side by side in one process (`--seeds 42,1,2,3`), mean ± std over them
    cli          `hstu-train` / `python -m hstu_tutorial.train`

The recipe is the paper's ML-1M one, as the official implementation runs it: AdamW (lr 1e-3, betas
0.9/0.98, no weight decay), batch 128, sampled softmax with 128 uniform negatives at temperature 0.05,
every position predicting the next item, and after every epoch a full-ranking evaluation of the
validation and test targets.

What makes it fast (no change to the maths):
  * the splits live on the device; a batch is a gather there, never a host-side Python loop;
  * nothing reads a GPU value back during an epoch: the loss is summed on the device and read once per
    epoch, together with all the metrics;
  * negatives are drawn on the device; the sampled-softmax logits come from one dense matrix product;
  * on CUDA, the whole training step (forward, backward, AdamW) is captured once as a CUDA graph and
    replayed: a few microseconds of launch work per step instead of hundreds of kernel launches. A graph
    needs fixed shapes, so batches use the "padded" layout: B histories of N = max_seq_len positions,
    handed to the model as a jagged batch of B sequences of length N each. Causal attention never looks
    ahead, so a real position never sees the padding after it and its output is the same as with the
    jagged layout (checked in tests/test_train.py); padded positions get weight 0 in the loss. The time
    gap to the target, which HSTU's relative bias reads at the last real position, is stored in the
    first padding slot.

Under torchrun (WORLD_SIZE > 1) each rank trains on its share of every epoch's batches with
DistributedDataParallel (gradients all-reduced, no CUDA graph), rank 0 evaluates and writes the files.
Memory levers: `grad_accum_steps` (micro-batches weighted by their supervised positions: the large
batch's gradient) and `recompute` (torch.utils.checkpoint per block); see hstu_tutorial/memory.py.

Outputs go to `exps/<dataset>-l<max_seq_len>/<run>/`: TensorBoard events, `ckpt_last.pt`, `ckpt_best.pt`,
`results.json` and `results.md` (best-by-validation numbers next to the reference protocol's numbers, and
the dataset's fingerprint), `ranks_test.csv` / `ranks_valid.csv` (every user's rank at the best epoch; local
outputs, never committed) and the experiment record: see run_files.
"""

from hstu_tutorial.errors import ConfigError
from hstu_tutorial.training.cli import main
from hstu_tutorial.training.config import TrainConfig, list_configs, load_config
from hstu_tutorial.training.report import PAPER_ML1M, REFERENCE_ML1M_U2999, results_markdown
from hstu_tutorial.training.trainer import Trainer, train

__all__ = [
    "REFERENCE_ML1M_U2999",
    "PAPER_ML1M",
    "ConfigError",
    "TrainConfig",
    "Trainer",
    "list_configs",
    "load_config",
    "main",
    "results_markdown",
    "train",
]
