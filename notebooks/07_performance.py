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
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 07 · Performance: every lever measured, not described
#
# The paper's speed claims rest on a handful of ideas: **jagged batches** (no FLOPs on padding), a **fused
# attention kernel** (SiLU instead of softmax: nothing to rescale between tiles), **lower precision** (TF32,
# bf16), **activation recomputation** (memory for compute), **larger batches** and **fast data loading**.
# Each can also do nothing, or make things worse, depending on the model's size and the machine. So this
# notebook *measures* each lever on one model and one dataset, and then measures how the cost grows with the
# sequence length $N$ and the depth, against the $O(N^2 d)$ and $O(N d)$ terms the maths predicts.
#
# On a GPU (preset `full`) the cells measure live. On a CPU (preset `small`) they show the figures the
# benchmark scripts saved on an H200 (machine and date printed with them) and measure what a CPU can in
# a minute or two. The same code runs in both cases: `benchmarks/perf_harness.py` drives the trainer of
# `hstu_tutorial.train` and times its own training step.

# %%
import json
import sys
from pathlib import Path

import pandas as pd
import torch
from IPython.display import Markdown, display

import hstu_tutorial
from hstu_tutorial import viz

preset = hstu_tutorial.get_preset()
torch.set_num_threads(min(torch.get_num_threads(), 16))
ROOT = Path.cwd().resolve().parent if Path.cwd().name == "notebooks" else Path.cwd().resolve()
sys.path.insert(0, str(ROOT))  # the benchmark scripts live in <repo>/benchmarks
from benchmarks import bench_levers, bench_scaling  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
ON_GPU = preset.device == "cuda"

# %% [markdown]
# ## 1. The levers on an H200
#
# `benchmarks/bench_levers.py` builds the paper's ML-1M HSTU (2 blocks, 1 head, $d = 50$, batch 128, 128
# sampled negatives) on `data/ml-1m-u2999` (ML-1M's users 1-2999) and measures each lever as **one change
# against a named row** (`vs`):
#
# | lever | what changes | what it should buy |
# | --- | --- | --- |
# | precision | fp32 → TF32 matmuls → bf16 autocast | faster matmuls (tensor cores), smaller activations |
# | attention | padded PyTorch einsums → jagged Triton kernel | no $N \times N$ intermediates in memory, no padding FLOPs |
# | batches | jagged → padded $(B, 200)$ | fixed shapes (graph capture, compilers), at the price of padding |
# | CUDA graph | eager step → the whole step (forward, backward, AdamW) replayed as one graph | no per-kernel launch cost |
# | recompute | keep activations → recompute each block in the backward pass | memory, for one more forward |
# | grad accumulation | one batch of 128 → 4 micro-batches of 32, one optimizer step | memory, for more, smaller launches |
# | batch size | 64, 128, 256, 512 | fewer steps per epoch, better GPU occupancy |
# | data loading | batches gathered on the device → built on the host by a `DataLoader` (0 or 4 workers) | nothing, if the step is the bottleneck |
# | `torch.compile` | eager PyTorch → compiled (fused) kernels | fewer launches and memory passes, after a compilation |
#
# "step" is the median of synchronised single steps, "epoch" one pass over the training split (no
# evaluation, warm-up excluded), "1st epoch" includes autotuning, compilation or graph capture. Memory is
# `torch.cuda.max_memory_allocated` on a GPU; "activations" is what autograd keeps for the backward pass
# (counted with `torch.autograd.graph.saved_tensors_hooks`, also on a CPU).

# %%
saved = json.loads((RESULTS / "levers_h200.json").read_text())
m = saved["machine"]
print(f"saved figures: {m['device']}, {m['date_utc']}, torch {m['torch']}, triton {m['triton']}, data {saved['data']}")
display(Markdown(bench_levers.to_markdown(saved).split("\n", 3)[3]))

# %%
fig, drawn = viz.plot_levers(saved)

# %% [markdown]
# Reading it. The eager rows all cost about the same per step: fp32, TF32, bf16, PyTorch or Triton attention.
# A model with $d = 50$ and $N = 200$ does very little arithmetic per kernel; what a step costs is the
# *launch* of several hundred small kernels (each a few microseconds of CPU work, and a gap on the GPU). The
# levers that pay are therefore the ones that remove launches: the **CUDA graph** (the trainer's default on
# a GPU), **`torch.compile`** (fewer, fused kernels) and **larger batches** (fewer steps for the same
# epoch). Precision pays once launches are gone (bf16 on top of the graph). The memory levers trade as
# expected: recomputation and accumulation shrink what is kept for the backward pass and cost time.
#
# The lesson generalises: *measure which resource is the bottleneck before pulling a lever*. A lever that
# speeds up the arithmetic cannot help a step that is waiting on launches or on data.

# %% [markdown]
# ## 2. Measuring the levers here
#
# The same function produced the saved table; `run_levers` picks the rows this machine can run (on a CPU:
# no TF32, no Triton (its CPU interpreter is for correctness only), no CUDA graphs, and no
# `torch.compile`, whose C++ build takes minutes on two cores). On a CPU the rows time steps only
# (`epochs=0`) to keep the notebook short; memory is the estimate parameters + gradients + AdamW state +
# activations kept for backward.

# %%
if ON_GPU:
    live = bench_levers.run_levers(preset, time_budget_s=240)
else:
    cpu_rows = [r for r in bench_levers.CPU_ROWS if r[0] in ("fp32", "bf16", "padded_pt", "recompute_pt", "accum4", "bs128")]
    live = bench_levers.run_levers(preset, rows=cpu_rows, epochs=0, step_iters=4)
display(Markdown(bench_levers.to_markdown(live).split("\n", 3)[3]))

# %%
fig, drawn = viz.plot_levers(live, speed="tokens_per_s")

# %% [markdown]
# On a CPU the picture is different from the GPU's, and that is the point: here each kernel does real work
# relative to its launch, so batch size and padding show up directly in the time, bf16 is often *slower*
# (few CPUs have fast bf16 units) and recomputation costs its full extra forward pass. The memory columns
# behave as on the GPU: recomputation and accumulation keep far fewer activation bytes.

# %% [markdown]
# ## 3. Scaling with sequence length and depth
#
# Per sequence of length $N$ with model width $d$ (here $d_{qk} = d_v = D = 50$, one head), a layer does
#
# $$\underbrace{O(N \cdot d^2)}_{\text{projections } W_{uvqk},\ f_2} \;+\; \underbrace{O(N^2 \cdot d)}_{\text{scores } QK^\top \text{ and } A V}$$
#
# so the attention term takes over once $N$ is several times $d$. With $d$ fixed, the first term is linear in
# $N$: in a batch of histories of lengths $L_b$ the cost is $a \sum_b L_b^2 d + b \sum_b L_b d + c$.
# A padded implementation pays $\sum_b N^2$ whatever the true lengths; a jagged one pays $\sum_b L_b^2$.
# Memory follows the same split: the PyTorch attention materialises $N \times N$ matrices (scores, SiLU,
# bias, masks) and keeps several for backward; a fused kernel keeps only $O(N d)$.
#
# `benchmarks/bench_scaling.py` keeps about the same number of positions in every batch ($B = $ tokens $/ N$),
# so a purely linear cost stays flat and the $N^2$ term shows as a line of slope 1 on the log-log plot.
# The dashed lines are each series' fitted $N^2 d$ part, the dotted ones the rest ($N d$ part plus a
# constant; for a series that pads, $\sum_b L_b d = B N d$ is the same at every $N$ here, so the fit cannot
# split it from the constant).

# %%
scaling = json.loads((RESULTS / "scaling_h200.json").read_text())
m = scaling["machine"]
print(f"saved figures: {m['device']}, {m['date_utc']}, torch {m['torch']}")
fig, drawn = viz.plot_scaling(scaling, sweep="length", quantity="ms")

# %%
fig, drawn = viz.plot_scaling(scaling, sweep="length", quantity="activations_mib", show_terms=False)

# %%
fits = pd.DataFrame(scaling["fits"]).T[["a_ms_per_L2d", "b_ms_per_Ld", "c_ms", "quadratic_share_at_max_N", "rel_rmse"]]
fits.columns = ["a (ms per L^2 d)", "b (ms per L d)", "c (ms)", "N^2 share at N=8192", "rel. RMSE"]
display(fits.style.format({"a (ms per L^2 d)": "{:.2e}", "b (ms per L d)": "{:.2e}", "c (ms)": "{:.2f}",
                           "N^2 share at N=8192": "{:.2f}", "rel. RMSE": "{:.2f}"}))
fig, drawn = viz.plot_scaling(scaling, sweep="depth", quantity="ms", show_terms=False)

# %% [markdown]
# What the H200 curves show:
#
# * **PyTorch HSTU attention**: flat at short $N$ (launches and the linear term), then the $N^2 d$ term takes
#   over past $N \approx 2048$; time doubles with every doubling of $N$ at a fixed token count, as $O(N^2)$ per
#   sequence predicts. Its activation memory grows the same way: the $N \times N$ matrices it keeps.
# * **The Triton kernel** keeps the activations kept for backward flat in $N$ (nothing $N \times N$ is
#   stored: the point of a fused kernel), jagged beats padded by skipping padding, and from $N = 1024$ up it is
#   faster than the PyTorch einsums. But its *peak* memory still grows as $N^2$: the backward pass writes the
#   gradient of the relative bias as a full $(B, H, N, N)$ fp32 tensor and reduces it onto the bias tables with
#   PyTorch scatter-adds (the opt-in atomic mode adds the table gradients inside the kernel: flat memory, but
#   collisions at long N). The anchors (`../shared/ANCHORS.md`) give the official kernel's speed on the same
#   card.
# * **SASRec** runs its softmax attention through PyTorch's fused kernel (`scaled_dot_product_attention`):
#   memory is flat in $N$ and the $N^2$ term is small even at 8192 (it has no relative bias to build).
# * **Depth** is linear for every model: each block adds the same work.

# %% [markdown]
# ### Measured here
#
# The same sweep at sizes a CPU can run in about half a minute (PyTorch paths only).

# %%
if ON_GPU:
    here = bench_scaling.run_scaling("full", time_budget_s=150)
else:
    here = bench_scaling.run_scaling("small", lengths=[32, 64, 128, 256], depths=[1, 2, 4], tokens=1024, iters=3,
                                     series=["HSTU PyTorch attention", "SASRec"], depth_sweep=False)
fig, drawn = viz.plot_scaling(here, sweep="length", quantity="ms")
print(pd.DataFrame(here["points"])[["series", "N", "B", "ms", "activations_mib"]].round(2).to_string(index=False))

# %% [markdown]
# ## Closing note: the figures from the H200
#
# Measured with `benchmarks/bench_levers.py` and `benchmarks/bench_scaling.py` on NVIDIA H200 (torch 2.11.0+cu130, triton 3.6.0), 2026-11-28 18:02 UTC, on ml-1m-u2999 (ML-1M users 1-2999):
#
# Measured 2026-11-28 18:02 UTC on NVIDIA H200 (torch 2.11.0+cu130, triton 3.6.0), preset full, Triton tiles fixed config (no autotuning). Memory: torch.cuda.max_memory_allocated during training. Epoch = one pass over the training split (no evaluation), warm-up excluded; '1st epoch' includes autotuning/compilation/graph capture. Speed-up: epoch time of the row named in 'vs' / this row's (tokens/s ratio when no epoch was timed).
# | lever | setting | step (ms) | epoch (s) | 1st epoch (s) | k tokens/s | speed-up | vs | memory (MiB) | memory ratio | activations (MiB) |
# |---|---|---|---|---|---|---|---|---|---|---|
# | precision | fp32 (TF32 off), PyTorch attention, jagged, eager | 11.16 | 0.249 | 0.53 | 1273 | - | - | 1074 | - | 425.6 |
# | precision | TF32 matmuls | 11.81 | 0.280 | 0.31 | 1129 | 0.89 | fp32 | 1008 | 0.94 | 425.6 |
# | precision | bf16 autocast (+TF32) | 12.06 | 0.298 | 0.41 | 1062 | 0.94 | tf32 | 937 | 0.93 | 361.0 |
# | attention | Triton jagged kernel instead of PyTorch attention | 11.60 | 0.254 | 0.80 | 1248 | 1.11 | tf32 | 853 | 0.85 | 274.3 |
# | batches | padded batches (B x 200), PyTorch attention | 10.38 | 0.270 | 0.29 | 1173 | 1.04 | tf32 | 1564 | 1.55 | 736.3 |
# | batches | padded batches (B x 200), Triton attention | 8.59 | 0.202 | 0.22 | 1564 | 1.25 | triton | 1396 | 1.64 | 569.8 |
# | CUDA graph | Triton, padded, step as one CUDA graph (trainer default) | 6.35 | 0.150 | 0.21 | 2107 | 1.35 | padded_tr | - | - | 569.8 |
# | CUDA graph | trainer default + bf16 autocast | 4.80 | 0.111 | 0.18 | 2846 | 1.35 | graph | - | - | 521.1 |
# | recompute | activation recomputation, PyTorch attention | 14.48 | 0.385 | 0.40 | 822 | 0.73 | tf32 | 801 | 0.80 | 216.4 |
# | recompute | activation recomputation, Triton attention | 12.18 | 0.273 | 0.28 | 1161 | 0.93 | triton | 781 | 0.91 | 216.4 |
# | grad accumulation | 4 micro-batches of 32, PyTorch attention | 47.85 | 1.145 | 1.03 | 277 | 0.25 | tf32 | 352 | 0.35 | 106.4 |
# | batch size | batch 64 (trainer default) | 3.94 | 0.179 | 0.23 | 1772 | 0.84 | graph | - | - | 286.1 |
# | batch size | batch 256 (trainer default) | 11.37 | 0.134 | 0.19 | 2355 | 1.12 | graph | - | - | 1137.4 |
# | batch size | batch 512 (trainer default) | 21.32 | 0.126 | 0.22 | 2503 | 1.19 | graph | - | - | 2272.4 |
# | data loading | host DataLoader, 0 workers (vs device-resident) | 10.95 | 0.252 | 0.25 | 1255 | 1.01 | triton | 861 | 1.01 | 274.3 |
# | data loading | host DataLoader, 4 workers, pinned | 12.75 | 0.278 | 0.48 | 1141 | 0.91 | triton | 905 | 1.06 | 274.3 |
# | torch.compile | torch.compile, PyTorch attention, padded | 6.09 | 0.149 | 19.46 | 2122 | 1.81 | padded_pt | 1501 | 0.96 | 677.2 |
#
# Notes:
# - Memory of the CUDA-graph rows (graph, graph_bf16, bs64/256/512) is not shown: in this run the peak was reset after the graph was captured, and replaying a graph allocates nothing the allocator sees (the script now starts the peak before the capture). Their 'activations' column (bytes autograd keeps for backward in one eager forward of the same step) is valid and grows linearly with the batch.
# - A first run the same day with autotuned Triton tiles (levers_h200_autotuned_run1.json; its memory column is not valid: earlier rows' memory leaked into later ones) measured steps of 9.8 ms (fp32), 11.2 ms (TF32), 10.6 ms (bf16), 16.8 ms (Triton, jagged), 11.8 ms (CUDA graph). Eager steps of this small model (d=50) cost ~10 ms whatever the precision or kernel: they are bound by kernel launches, not arithmetic; differences between eager rows of ~15% are within run-to-run variation.
#
#
# What the H200 says, in one paragraph. A training step of the paper's ML-1M HSTU (d = 50, 2 blocks) is tiny: in
# eager mode it costs about 11.8 ms whatever the precision or attention kernel (fp32 11.2 ms, TF32 11.8 ms, bf16
# 12.1 ms, Triton 11.6 ms), because it is made of hundreds of small kernel launches, not of arithmetic. The levers
# that pay are the ones that remove launches: capturing the whole step as one CUDA graph (6.4 ms; epoch
# 0.150 s against 0.280 s eager), `torch.compile` (6.1 ms, after a 19 s compilation), bf16 on top of
# the graph (4.8 ms, epoch 0.111 s), and larger batches (batch 512: epoch 0.126 s). The memory levers work as
# the theory says: recomputation keeps 216 MiB of activations instead of 426 MiB for
# 23% more time per step (PyTorch attention), and 4-way gradient accumulation cuts the peak to
# 0.35x for 4x the time. Host-side data loading costs nothing visible at this size: the step, not
# the loader, is the bottleneck.
#
# Scaling (one forward + backward, about 32k positions per batch, 2 blocks; measured 2026-11-28 19:48 UTC): at
# N = 8192 the PyTorch HSTU attention takes 52 ms, the Triton jagged kernel 42 ms and SASRec (PyTorch's
# fused softmax attention) 15 ms. The Triton path's *peak* memory still grows as $N^2$
# (8.1 GiB at N = 8192): its backward writes the gradient of the relative bias as a $(B, H, N, N)$
# tensor and reduces it onto the bias tables outside the kernel. A second mode adds those gradients onto the
# tables inside the kernel with atomics (`benchmarks/results/rel_bias_grad_h200.md`): at the ML-1M shape it is
# 1.7x faster and needs 12 MiB instead of 172, but at N = 8192 the atomics of one sequence's ~128 key tiles
# collide and it is 2.8x slower (19 MiB instead of 9.2 GiB); and end to end on ML-1M it showed no gain. It is
# opt-in (`HSTU_TRITON_REL_BIAS_GRAD=atomic`, or `auto`: atomics up to N = 1024). A kernel that is both fast and
# small at long N is still an open problem of this suite, measured here rather than hidden.
#
# After the lever table was measured, the step got faster (`benchmarks/results/levers_h200_layernorm.md`, same
# script). PyTorch's LayerNorm is slow for rows of 50 values (a width that is not a multiple of 4): a profile
# (`benchmarks/profile_step.py`, `benchmarks/results/profile_h200.md`) showed it taking 60% of an evaluation. A
# fused Triton LayerNorm, together with TF32 dot products in the Triton attention when TF32 is on, took the
# CUDA-graph step from 6.4 ms to 4.4 ms (bf16: 4.8 ms to 4.1 ms). Profile first: the slow kernel
# was not the one anybody would have guessed.
#
# Two GPUs (`benchmarks/bench_ddp.sh`, `benchmarks/results/ddp_h200x2.md`): under `torchrun` with
# DistributedDataParallel the trainer ran 1.87x as fast per epoch as one GPU with the same eager step, but only
# 1.06x as fast as one GPU with its CUDA-graph step: a model this small is bound by launches, so a second GPU
# pays only once each GPU has enough work.
#
# Reproduce (about 4 minutes of GPU time; data/ml-1m-u2999 must be present, else the synthetic ML-1M-size set is used):
#
# ```
# PYTHONPATH=. python benchmarks/bench_levers.py --fixed-kernel-config     # -> benchmarks/results/levers_<gpu>.{json,md}
# PYTHONPATH=. python benchmarks/bench_scaling.py                          # -> benchmarks/results/scaling_<gpu>.{json,md}
# ```
