# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (hstu-tutorial)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 08 · Troubleshooting: out of memory, slow training, poor results
#
# Three things go wrong when you train a recommender like HSTU: the run **does not fit in memory**, it
# **runs too slowly**, or it **learns too little**. For each, this notebook applies the usual remedies and
# *measures* what each one does, so that you can recognise the symptom and know the size of the cure. It
# ends with the **experiment record** that the package fills in from any run, so that a result can be
# reproduced and compared.
#
# On a CPU everything runs in a few minutes: on MovieLens-1M when it is on disk (preset `real-cpu`), else on the
# synthetic look-alike (`small`, what CI runs); memory is then the
# sum of parameters, gradients, AdamW state and the activations autograd keeps for the backward pass
# (counted tensor by tensor with `torch.autograd.graph.saved_tensors_hooks`). On a GPU the same cells report
# `torch.cuda.max_memory_allocated`.
#
# > **中文摘要**：训练出问题时怎么办：显存不足、训练太慢、效果不好，每种症状都实测各项对策的效果，最后介绍
# > 可复现的实验记录。你只需运行并阅读；遇到问题时按症状查对应的小节。

# %%
import tempfile
from pathlib import Path

import pandas as pd
import torch
from IPython.display import Markdown, display

import hstu_tutorial
from hstu_tutorial import viz
from hstu_tutorial.memory import SavedBytes, enable_recompute
from hstu_tutorial.data import get_reco_dataset
from hstu_tutorial.training.experiment import experiment_record, record_markdown, save_record
from hstu_tutorial.perf import lever_config, lever_dataset, measure_trainer, profile_loading
from hstu_tutorial.train import load_config, train

preset = hstu_tutorial.get_preset()
torch.set_num_threads(min(torch.get_num_threads(), 16))
ROOT = Path.cwd().resolve().parent if Path.cwd().name == "notebooks" else Path.cwd().resolve()

ON_GPU = preset.device == "cuda"
DEVICE = "cuda" if ON_GPU else "cpu"
WORK = Path(tempfile.mkdtemp(prefix="hstu08-"))  # run folders of this notebook (thrown away)
if preset.name == "real-cpu":  # the real data, at the preset's window
    dataset = preset.load_dataset(verbose=False)
    data_keys = {"dataset": "ml-1m", "data_dir": str(dataset.folder)}
else:  # full: ML-1M users 1-2999 as in the committed H200 lever runs; small: the synthetic look-alike
    dataset, _, data_keys = lever_dataset(preset)
print(f"Data: {viz.dataset_label(dataset)}, {len(dataset.train):,} training histories")

# %% [markdown]
# ## 1. Out of memory
#
# A training step holds four things in memory: the **parameters**, their **gradients**, the optimizer's
# **state** (AdamW: two moments per parameter), and the **activations** the forward pass keeps for the
# backward pass. For HSTU the last one dominates and grows as
#
# $$\text{activations} \;\propto\; \underbrace{B}_{\text{batch}} \times \underbrace{L}_{\text{blocks}} \times \Big(\underbrace{N \cdot d}_{\text{per token}} + \underbrace{N^2}_{\text{attention maps (PyTorch path)}}\Big).$$
#
# So the remedies are: a **smaller batch** ($B$), **activation recomputation** (keep only each block's input,
# recompute the rest in the backward pass), **fewer blocks** ($L$), and **gradient accumulation** (run the
# batch as $k$ micro-batches and add their gradients: the optimizer sees the same gradient, the memory is
# that of one micro-batch). Below each is applied to a baseline (4 blocks) and measured.

# %%
base_keys = dict(num_blocks=4, layout="jagged", cuda_graphs="off", batch_size=64 if not ON_GPU else 512)
remedies = {
    "baseline (4 blocks)": {},
    "smaller batch (1/2)": {"batch_size": base_keys["batch_size"] // 2},
    "recomputation": {"recompute": True},
    "fewer blocks (2)": {"num_blocks": 2},
    "gradient accumulation (4 micro-batches)": {"grad_accum_steps": 4},
}
rows = []
for name, change in remedies.items():
    change = dict(change)
    recompute = change.pop("recompute", False)
    cfg = lever_config(preset, data_keys, device=DEVICE, **{**base_keys, **change})
    m = measure_trainer(cfg, dataset, recompute=recompute, epochs=0, step_iters=1)
    rows.append({"remedy": name, "memory_mib": m["peak_mem_mib"] if ON_GPU else m["est_mem_mib"],
                 "activations_mib": m["activations_mib"], "state_mib": m["state_mib"], "step_ms": m["step_ms"],
                 "tokens_per_s": m["tokens_per_s"]})
oom = pd.DataFrame(rows).set_index("remedy")
oom["memory vs baseline"] = oom["memory_mib"] / oom["memory_mib"].iloc[0]
oom["time per token vs baseline"] = oom["tokens_per_s"].iloc[0] / oom["tokens_per_s"]
print(oom.round(2).to_string())
fig, drawn = viz.plot_remedies(rows, "memory_mib", xlabel="memory (MiB): " + ("GPU peak" if ON_GPU else "estimate"))

# %% [markdown]
# Suppose the device had only 60% of the baseline's memory. Which remedies make the step fit, and at what
# cost in time? (On a real GPU the baseline would stop with `torch.OutOfMemoryError: CUDA out of memory`;
# the message's "Tried to allocate X" is one tensor, not the total, so compare the remedies' peaks, not X.)

# %%
budget = 0.6 * oom["memory_mib"].iloc[0]
verdict = oom.assign(fits=oom["memory_mib"] <= budget)[["memory_mib", "fits", "time per token vs baseline"]]
print(f"memory budget: {budget:.1f} MiB")
print(verdict.round(2).to_string())

# %% [markdown]
# Two of the remedies change nothing in what the model learns, and that is worth checking rather than
# believing: **recomputation** replays the same forward (dropout masks included, since the RNG state is
# saved and restored), and **gradient accumulation** weights each micro-batch's mean loss by its share of the
# supervised positions $n_m / n$ (not by $1/k$: histories have different lengths), so the summed gradient is
# the large batch's. `tests/test_accumulation.py` checks both on every change; here is the recomputation check
# on one batch:

# %%
from hstu_tutorial.train import Trainer

cfg = lever_config(preset, data_keys, device=DEVICE, **base_keys)
tr = Trainer(cfg, dataset=dataset, verbose=False)
index = torch.arange(32, device=tr.device)
batch = tr.train_batch(index)  # the trainer's layout, with each position's next item


def grads_of_one_step():
    tr.model.zero_grad(set_to_none=True)
    torch.manual_seed(0)  # same dropout masks
    loss = tr.loss(batch)  # the trainer's loss on this batch
    loss.backward()
    return loss.item(), [p.grad.clone() for p in tr.model.parameters()]


loss_plain, g_plain = grads_of_one_step()
with SavedBytes(tr.model) as kept_plain:
    tr.loss(batch)
enable_recompute(tr.model)
loss_rc, g_rc = grads_of_one_step()
with SavedBytes(tr.model) as kept_rc:
    tr.loss(batch)
print(f"loss {loss_plain:.6f} vs {loss_rc:.6f}; largest gradient difference "
      f"{max((a - b).abs().max().item() for a, b in zip(g_plain, g_rc)):.1e}")
print(f"activations kept for backward: {kept_plain.mib:.2f} MiB -> {kept_rc.mib:.2f} MiB")

# %% [markdown]
# **Which GPU is enough?** `docs/hardware.md` gives, per model, batch size and history length, the measured peak
# memory (evaluation included), whether it fits in 8, 12 or 24 GB, and each remedy above one at a time, measured on
# an NVIDIA H200 on 2026-12-01. The cell below reads the same file.

# %%
import json as _json

hw_file = Path(hstu_tutorial.__file__).resolve().parents[1] / "benchmarks/results/h200_2026-12-01/hardware.json"
if not hw_file.is_file():
    print("no saved hardware table in", hw_file.name)
else:
    hw = pd.DataFrame(_json.loads(hw_file.read_text())["cases"])
    hw = hw[(hw["group"] == "settings") & (hw["status"] == "ok")]
    hw = hw[["model", "setting", "train_s_per_epoch", "peak_allocated_mib", "peak_reserved_mib"]]
    display(hw.round(3).set_index(["model", "setting"]))
    default = hw[hw.setting == "default"].set_index("model")
    lines = []
    for setting in ("bf16", "recompute", "accum2", "no_graphs"):
        rows = hw[hw.setting == setting].set_index("model")
        alloc = (rows["peak_allocated_mib"] / default["peak_allocated_mib"]).mean()
        reserved = (rows["peak_reserved_mib"] / default["peak_reserved_mib"]).mean()
        speed = (rows["train_s_per_epoch"] / default["train_s_per_epoch"]).mean()
        lines.append(f"- `{setting}`: peak allocated x{alloc:.2f}, peak reserved x{reserved:.2f}, "
                     f"time per epoch x{speed:.2f} (mean over the three models)")
    display(Markdown("Against the default, on the H200:\n\n" + "\n".join(lines)))

# %% [markdown]
# ## 2. Slow training
#
# First find the bottleneck, then pull the lever that removes it. The H200 figures saved by
# `benchmarks/bench_levers.py` (notebook 07 has the whole table) show the levers for the GPU case:

# %%
import json

saved = json.loads((ROOT / "benchmarks" / "results" / "h200_2026-11-28" / "levers.json").read_text())
pick = ["fp32", "tf32", "bf16", "triton", "padded_tr", "graph", "graph_bf16", "compile", "bs512"]
h200 = pd.DataFrame([r for r in saved["rows"] if r["id"] in pick]).set_index("id")
print(f"{saved['machine']['device']}, {saved['machine']['date_utc']}, {saved['data']}")
print(h200[["setting", "step_ms", "epoch_s", "speedup", "vs"]].round(3).to_string())

# %% [markdown]
# * **TF32** (`tf32 = true`, the default) lets fp32 matrix products use the tensor cores with a 10-bit
#   mantissa; **bf16 autocast** (`bf16 = true`) halves activation traffic. Both help when the step is
#   arithmetic-bound. For the paper's ML-1M model ($d = 50$) it is not (the cell below compares the three):
#   an eager step there is bound by launching many small kernels.
# * **The Triton kernel** (`attention_impl = "triton"`) removes the $N \times N$ intermediates of the
#   PyTorch attention; it pays in memory at every length and, once it is tuned, in time at long $N$
#   (notebook 07 measures where it stands today).
# * What removes launch overhead: **CUDA graphs** (`cuda_graphs = "auto"`, the trainer's default on a GPU),
#   **`torch.compile`** (`compile = true`, after a compilation of its own) and **larger batches**.

# %%
eager = h200.loc[["fp32", "tf32", "bf16"], "step_ms"]
display(Markdown(
    f"On the {saved['machine']['device']}: an eager step takes {eager['fp32']:.2f} ms in fp32, {eager['tf32']:.2f} ms "
    f"in TF32 and {eager['bf16']:.2f} ms in bf16 (largest/smallest {eager.max() / eager.min():.2f}x); "
    f"the CUDA graph takes {h200.loc['graph', 'step_ms']:.2f} ms ({eager['tf32'] / h200.loc['graph', 'step_ms']:.1f}x "
    "faster than eager TF32)."
))
#
# Larger batches on this machine, measured (tokens per second of a training step; each batch size also
# changes the optimisation, so re-check the metrics when you change it):

# %%
sizes = [8, 32, 128] if not ON_GPU else [64, 128, 256, 512]
bs_rows = []
for bs in sizes:
    cfg = lever_config(preset, data_keys, device=DEVICE, batch_size=bs, layout="jagged")
    m = measure_trainer(cfg, dataset, epochs=0 if not ON_GPU else 2, step_iters=1 if not ON_GPU else 5)
    bs_rows.append({"batch size": bs, "step_ms": m["step_ms"], "k_tokens_per_s": m["tokens_per_s"] / 1e3})
print(pd.DataFrame(bs_rows).round(2).to_string(index=False))
fig, drawn = viz.plot_remedies(bs_rows, "k_tokens_per_s", label="batch size", xlabel="k tokens / s (higher is better)")

# %% [markdown]
# **Is the data loader the bottleneck?** Profile a few steps with `torch.profiler`, marking the time spent
# getting the next batch and the time spent computing. The trainer keeps each split on the device and
# gathers a batch with a few indexing kernels; a typical PyTorch `DataLoader` builds it on the host, one user at
# a time. Both are profiled below, the second in its naive form (Python lists, no workers):

# %%
cfg = lever_config(preset, data_keys, device=DEVICE, layout="jagged")
resident = profile_loading(cfg, dataset, host_loader_workers=None, steps=3)
naive = profile_loading(cfg, dataset, host_loader_workers=0, steps=3, python_loop=True)
for name, p in (("device-resident batches", resident), ("naive host loader", naive)):
    print(f"{name:24s}: data {p['data_ms'] / 3:7.2f} ms/step, compute {p['compute_ms'] / 3:8.2f} ms/step, "
          f"data share {p['data_share']:.1%}")
print(naive["table"])

# %% [markdown]
# Read the share, not the absolute time (the cell after next puts this machine's figures in words). On a GPU
# the same loader is measured against a step of a few milliseconds: a loader that costs as much as the step
# halves the speed. The cure, in that order: build batches with tensor operations
# instead of Python loops, keep the data on the device (as the trainer does), or use `num_workers > 0` and
# `pin_memory=True` so that loading overlaps with compute.

# %%
graph_ms = next(r["step_ms"] for r in saved["rows"] if r["id"] == "graph")
loader_ms = naive["data_ms"] / 3
print(f"naive loader here: {loader_ms:.1f} ms per batch; H200 training step (CUDA graph): {graph_ms:.1f} ms "
      f"-> the loader would take {loader_ms / (loader_ms + graph_ms):.0%} of each step on the GPU")
display(Markdown(
    f"Here, on {DEVICE.upper()}, the naive host loader is {naive['data_share']:.1%} of a step and the "
    f"device-resident batches {resident['data_share']:.1%}; next to the H200's {graph_ms:.1f} ms step the naive "
    f"loader would be {loader_ms / (loader_ms + graph_ms):.0%} of it."
))

# %% [markdown]
# ## 3. Poor results
#
# When the metrics are low, vary one thing at a time and measure. Four common causes, each shown on this
# notebook's data (MovieLens-1M on `real-cpu` and `full`, cut to its last 50 ratings per user on a CPU; the
# synthetic look-alike on `small`) with a short run: **too few epochs**, a **learning rate**
# that is too low, too little **capacity** (embedding width), and too few **negatives** in the sampled
# softmax (the loss then sees too few competitors to learn a ranking over the whole catalogue). The baseline
# is the small HSTU config; every run trains for the same number of epochs and reports test NDCG@10 at the
# best validation epoch (protocol `validation`).

# %%
EPOCHS = preset.pick(3, 2, 3)  # real-cpu: about a minute per run on a 2-core CPU
window = preset.pick(50, 50, 200)
if preset.real_data:
    runs_data = get_reco_dataset("ml-1m", window, dataset.folder, protocol="validation", verbose=False)
    runs_keys = {"dataset": "ml-1m", "data_dir": str(dataset.folder), "max_seq_len": window, "batch_size": 128}
else:
    runs_data = get_reco_dataset("synthetic", max_seq_len=window, protocol="validation", verbose=False)
    runs_keys = {}
print(f"runs on {viz.dataset_label(runs_data)}, window {window}, {EPOCHS} epochs each")
run_cfg = load_config("synthetic/hstu-small", runs_keys)
common = dict(dataset=runs_data, verbose=False, num_epochs=EPOCHS, tensorboard=False, progress=False,
              save_checkpoints=False, exp_dir=str(WORK), device=DEVICE, protocol="validation")
runs = {
    "baseline (lr 1e-3, d=32, 64 negatives)": {},
    "learning rate too low (1e-4)": {"learning_rate": 1e-4},
    "too little capacity (d=4)": {"embedding_dim": 4, "dqk": 4, "dv": 4},
    "too few negatives (2)": {"num_negatives": 2},
}
results = {}
for name, change in runs.items():
    results[name] = train(run_cfg, **common, **change)
    print(f"{name:40s} NDCG@10 {results[name]['best_by_valid']['test']['ndcg@10']:.4f}  "
          f"HR@10 {results[name]['best_by_valid']['test']['hr@10']:.4f}")

# %%
base = results["baseline (lr 1e-3, d=32, 64 negatives)"]
per_epoch = [{"remedy": f"epoch {h['epoch'] + 1}", "ndcg@10": h["test"]["ndcg@10"]} for h in base["history"]]
print("more epochs (baseline run, test NDCG@10 after each epoch):",
      ", ".join(f"{r['ndcg@10']:.4f}" for r in per_epoch))
poor = [{"remedy": k, "ndcg@10": v["best_by_valid"]["test"]["ndcg@10"]} for k, v in results.items()]
fig, drawn = viz.plot_remedies(poor, "ndcg@10", xlabel="test NDCG@10 (higher is better); ratio to the baseline")

# %%
ndcg = {k: v["best_by_valid"]["test"]["ndcg@10"] for k, v in results.items()}
b0 = ndcg["baseline (lr 1e-3, d=32, 64 negatives)"]
curve = [r["ndcg@10"] for r in per_epoch]
climbing = curve[-1] > curve[-2] if len(curve) > 1 else False
ref_negatives = load_config("ml-1m/hstu-sampled-softmax-n128-final").num_negatives
display(Markdown(
    f"Measured here: the baseline's test NDCG@10 went {' → '.join(f'{c:.4f}' for c in curve)} over {EPOCHS} epochs "
    + ("(still climbing at the last one: train longer); " if climbing else "(no longer climbing at the last one); ")
    + "; ".join(f"{k}: {v / b0:.2f}x the baseline" for k, v in ndcg.items() if not k.startswith("baseline"))
    + f". Each cure undoes its cause: raise the learning rate (AdamW at 1e-3 is the reference's choice), widen the "
    f"model, draw more negatives (the reference's ML-1M config draws {ref_negatives} per position). The paper "
    "and the reference fix these settings in a config you can see (`hstu_tutorial/configs/`)."
))

# %% [markdown]
# ## 4. A reproducible experiment record
#
# A number without its conditions cannot be reproduced or compared. `hstu_tutorial.training.experiment` turns the
# results of any run into a record with the date, the dataset (folder, protocol, sizes), the full config and
# the hyperparameters, HR@10 and NDCG@10 (and where they come from: the best validation epoch, or the
# reference protocol's mean of the last epochs), the training time and the GPU. The trainer fills it in
# by itself at the end of every run (`experiment.json` and `experiment.md` next to `results.json`); the
# function needs nothing but the results dict:

# %%
print("the trainer wrote:", sorted(p.name for p in Path(base["run_dir"]).iterdir()))
record = experiment_record(base, notes="08_troubleshooting baseline")
display(Markdown(record_markdown(record)))
saved_record = save_record(base, WORK / "record")
print(sorted(p.name for p in (WORK / "record").iterdir()))
# rerunning from the record: the config it holds is a complete TrainConfig
rerun_cfg = load_config(None, {k: v for k, v in saved_record["config"].items() if k != "resume"})
print(rerun_cfg.model, rerun_cfg.embedding_dim, rerun_cfg.learning_rate, rerun_cfg.num_epochs)

# %% [markdown]
# Keep one such record per run (the trainer writes it; `save_record(results, folder)` writes one for results
# from anywhere else), and compare runs by their records, never by memory.
#
# **Summary.** Out of memory: measure what dominates (activations, usually), then shrink $B$, recompute,
# or accumulate; all three were measured above, and accumulation and recomputation change nothing in the
# model. Slow: find the bottleneck (launches, arithmetic, data) with a profile before choosing a lever.
# Poor results: one change at a time, on a run short enough to repeat, recorded.
