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
# # 00 · Overview: HSTU, generative recommenders, and how to use this suite
#
# This suite teaches **HSTU** (Hierarchical Sequential Transduction Units), the sequential recommender of
# *Actions Speak Louder than Words: Trillion-Parameter Sequential Transducers for Generative Recommendations*
# (Zhai et al., ICML 2024), by reading, running and re-writing a real implementation: the package
# `hstu_tutorial` that every notebook imports is the code that trains the model, on a laptop CPU in the small
# preset and on a GPU at the paper's size.
#
# The first code cell of every notebook picks the **preset**, prints it and says which data it runs on: `small`
# (CPU, a synthetic MovieLens look-alike, minutes; what CI runs), `real-cpu` (CPU with MovieLens-1M on disk:
# the real data, training cut to a few minutes) or `full` (CUDA, MovieLens-1M, the paper's settings). Same code
# path, three sizes; set `HSTU_PRESET` to choose one yourself.
#
# > **中文摘要**：本篇介绍 HSTU（Zhai 等，*Actions Speak Louder than Words*，ICML 2024）与生成式推荐的思路、整套教程的地图、
# > 练习与检查的用法和学习清单；下一个单元格是中文速查卡的勘误。第一个代码单元格选定预设（`small`：CPU +
# > 合成数据；`real-cpu`：CPU + 磁盘上的 MovieLens-1M；`full`：GPU + MovieLens-1M）并说明所用数据。你只需从上到下运行，并在清单里勾选已掌握的条目。
# > 中文说明见 `README.zh-CN.md`，术语见 `docs/glossary.zh-CN.md`。

# %% [markdown]
# ## Errata for the quick-reference card · 速查卡勘误
#
# Many readers arrive from a Chinese quick-reference card for the official implementation
# (`facebookresearch/generative-recommenders`). Three of its statements are wrong or need context:
#
# 1. **The STU has no FFN.** The card's STU diagram puts a feed-forward network after the attention. HSTU's layer
#    has none: the gate $u$ multiplies the normalised attention output, $u \odot \mathrm{LayerNorm}(AV)$ (eq. 3,
#    shown below), and a single linear map $f_2$ and the residual follow. The official research code does exactly
#    this (`o_input = u * self._norm_attn_output(attn_output)`, then `self._o(...) + x`, in
#    `SequentialTransductionUnitJagged.forward`, `generative_recommenders/research/modeling/sequential/hstu.py`).
#    `03_stu_layer` §2 measures what leaving out the FFN saves.
# 2. **The attention is not $\mathrm{softmax}(QK^\top/\sqrt{d})$.** HSTU applies SiLU pointwise to
#    $QK^\top + \mathrm{rab}^{p,t}$ (paper §3.1, eq. 2): no softmax, no $1/\sqrt{d}$. The divisor is a constant
#    $n$ taken from the official research code: `qk_attn = F.silu(qk_attn) / n` with
#    `n = invalid_attn_mask.size(-1)`, i.e. max_sequence_len + max_output_len, 211 on ML-1M
#    (`_hstu_attention_maybe_from_cache`, same file; `docs/model_and_training.md`). `02_attention_math` §2
#    takes it apart.
# 3. **"10-1000x" is one claim for two algorithms.** The README of the official repository (its current
#    version, `meta-recsys/generative-recommenders`) says the paper proposes "efficient algorithms such as HSTU
#    and M-FALCON to accelerate training and inference for large-scale sequential models by 10x-1000x": HSTU and
#    M-FALCON together, training and inference together. For HSTU alone the paper's abstract states "5.3x to
#    15.2x faster than FlashAttention2-based Transformers on 8192 length sequences". M-FALCON is the paper's
#    algorithm for serving (inference); its throughput figures are not repeated here: read them in the paper.
#    Neither figure describes ML-1M at length 200. There, on one NVIDIA H200 (2026-12-02), this package trains
#    HSTU for 101 epochs in 5.2 s against the official code's 364 s (70x, checkpoints and logs of every epoch
#    included, `benchmarks/results/h200_2026-12-02/perf/epoch_overlap/README.md`; 12.4 s and 29x on 2026-11-28,
#    `benchmarks/results/h200_2026-11-28/training.md`): a gain of engineering (`07_performance` measures each
#    lever), not of HSTU against a Transformer.
#
# **中文**：(1) 速查卡的 STU 示意图画了前馈网络（FFN），但 HSTU 的 STU 层没有 FFN，由门控 u * LayerNorm(AV)
# 代替，之后只有一个线性层 f2 和残差连接。(2) HSTU 的注意力不是 softmax(QKᵀ/√d)，而是对 QKᵀ + rab 逐点取 SiLU
# （论文 §3.1 式 2），再除以常数 n；n 来自官方研究代码（ML-1M 上为 211）。(3) "10-1000x" 是官方 README 对
# HSTU 与 M-FALCON、训练与推理合在一起的说法；论文摘要对 HSTU 本身给出的是"在长度 8192 的序列上比基于
# FlashAttention2 的 Transformer 快 5.3 到 15.2 倍"。M-FALCON 是推理算法，其吞吐数字见论文原文，此处不转述。
# 详见 `README.zh-CN.md` 的"速查卡勘误"一节。

# %%
import hstu_tutorial
from hstu_tutorial import checks, progress, viz

preset = hstu_tutorial.get_preset()
print("Data the notebooks use:", viz.dataset_label(preset.load_dataset(verbose=False)))

# %% [markdown]
# ## What HSTU is, and why it matters
#
# **The generative-recommender framing.** Classic deep recommenders (DLRMs) score one (user, item) pair at a
# time from hundreds of hand-built features. HSTU instead reads a user's history as a *sequence of actions*
# (items watched, rated, clicked, with their timestamps) and, like a language model, predicts the next action
# at *every* position of the sequence. Ranking and retrieval become sequential transduction tasks; one
# encoder pass over a history of length $N$ trains $N$ predictions, and the paper shows quality that keeps
# improving as compute grows, as it does for language models.
#
# **Pointwise attention.** A Transformer normalises each attention row with a softmax. HSTU's layer (the
# *STU*) replaces it with a pointwise SiLU, adds a relative bias of positions and *time gaps*, and gates the
# result with a fourth projection $u$ (the paper's eqs. 1-3):
#
# $$U, V, Q, K = \mathrm{split}(\phi_1(f_1(X))), \qquad
# A(X)V(X) = \phi_2\!\left(Q K^\top + \mathrm{rab}^{p,t}\right) V, \qquad
# Y(X) = f_2\!\left(\mathrm{Norm}(A(X)V(X)) \odot U(X)\right)$$
#
# with $\phi_1 = \phi_2 = \mathrm{SiLU}$ (the diagram below draws one layer; notebook 03 takes it line by line);
# the research code that reproduces the paper's public-dataset results
# also divides the attention weights by a constant $n$ (the padded width, 211 on ML-1M; notebook 02 shows where).
# Without the softmax, an unrelated item adds SiLU(0) = 0 to a row instead of diluting it, which suits the
# non-stationary, enormous vocabularies of recommendation. The LayerNorm (the *Norm* of eq. 3) then removes the
# row's overall scale, so "ten matching items weigh more than one" holds for the relative sizes of the heads, not
# for the scale of one head: notebook 02 measures both.

# %%
fig, stu = viz.plot_stu_layer()

# %% [markdown]
# **Jagged batches.** Users' histories have very different lengths. Padding them to the longest wastes most
# of the compute on zeros; HSTU keeps a batch *jagged* (all items concatenated, plus `offsets` marking where
# each user starts) and its fused Triton kernel computes attention only where there are items, with no
# softmax state to carry between tiles.
#
# **Results.** The paper reports that HSTU beats SASRec (the standard Transformer recommender) on public
# datasets, and at Meta's scale, with a 1.5-trillion-parameter model, improves online metrics by 12.4% while
# running 5-15x faster than FlashAttention2-based Transformers on 8192-long sequences. On MovieLens-1M, the
# reference implementation's published numbers are:

# %% tags=["nbval-check-output"]
import pandas as pd

# Published ML-1M results of the reference implementation (README of facebookresearch/generative-recommenders)
published = pd.DataFrame(
    {"HR@10": [0.2853, 0.3097, 0.3294], "NDCG@10": [0.1603, 0.1720, 0.1893],
     "HR@50": [0.5474, 0.5754, 0.5935], "NDCG@50": [0.2185, 0.2307, 0.2481],
     "HR@200": [0.7528, 0.7716, 0.7839], "NDCG@200": [0.2498, 0.2606, 0.2771]},
    index=["SASRec", "HSTU", "HSTU-large"],
)
gain = (published.loc["HSTU"] / published.loc["SASRec"] - 1) * 100
print(published.to_string())
print(f"\nHSTU vs SASRec: {gain['HR@10']:+.1f}% HR@10, {gain['NDCG@10']:+.1f}% NDCG@10")

# %% [markdown]
# Notebook `06_training_ml1m` trains these three models with this package and puts our numbers next to these
# (at the paper's size on a GPU; on a CPU, a run cut to a few minutes). Leave-one-out evaluation: each user's
# last item is held out and ranked against the whole catalogue (3,883 movies).
#
# ## The map
#
# | notebook | what you learn | package files it reads |
# | --- | --- | --- |
# | `00_overview` | this page: HSTU, the map, exercises, your checklist | `progress.py`, `checks/` |
# | `01_data_format` | raw MovieLens files → per-user sequences → jagged batches; the split protocol and its pitfalls; time gaps | `data/` |
# | `02_attention_math` | softmax vs pointwise SiLU attention, the divisor $n$, the relative attention bias and its time buckets | `ops/hstu_attention.py` |
# | `03_stu_layer` | the STU layer line by line against a Transformer block: parameters, FLOPs, memory | `modules/` |
# | `04_jagged_tensors` | offsets, jagged ↔ padded, what padding costs, jagged attention | `ops/jagged_tensors.py` |
# | `05_triton_kernels` | Triton from zero, then HSTU's fused attention kernel, forward and backward | `ops/triton/` |
# | `06_training_ml1m` | sampled softmax, HR@K / NDCG@K, training HSTU and SASRec, results next to the paper's | `losses.py`, `metrics.py`, `train.py` |
# | `07_performance` | every speed and memory lever measured: jagged, Triton, bf16, recomputation, `torch.compile` | all |
# | `08_troubleshooting` | out of memory, slow training, poor results: each remedy measured | `train.py` |
#
# and the exercises (in `exercises/`, solutions in `exercises/solutions/`):
#
# | exercise | you write | after notebook |
# | --- | --- | --- |
# | `01_data` | per-user sequences, the leave-one-out split | 01 |
# | `02_attention` | softmax attention, HSTU pointwise attention, the time-bucket function | 02 |
# | `03_stu` | the STU layer's forward pass | 03 |
# | `04_jagged` | offsets, jagged → padded, jagged attention | 04 |
# | `05_triton` | a jagged Triton kernel, then HSTU's forward tile loop (Triton interpreter on CPU) | 05 |
# | `06_training` | the sampled softmax loss, HR@K and NDCG@K | 06 |
# | `07_project` | an open project: apply HSTU to a new dataset | all |

# %% [markdown]
# ## A map of the paper
#
# Zhai et al., *Actions Speak Louder than Words* (ICML 2024, arXiv 2402.17152), section by section, and where
# this course takes it up:
#
# | paper | what it says | here |
# | --- | --- | --- |
# | §1 Introduction | DLRMs do not scale with compute; recommendation as sequential transduction | this page |
# | §2 From DLRMs to Generative Recommenders | one time series of actions per user; ranking and retrieval as sequential transduction; generative training | `00_overview`, `01_data_format` (sequences, the split), `06_training_ml1m` (one pass trains every position) |
# | §3.1 HSTU, eqs. 1-3 | pointwise projection, pointwise aggregated (SiLU) attention with a relative bias of positions and time, gating by $u$ | `02_attention_math`, `03_stu_layer`; exercises `02_attention`, `03_stu` |
# | §3.2 Leveraging and increasing sparsity | an efficient jagged attention kernel; Stochastic Length | `04_jagged_tensors`, `05_triton_kernels`, `07_performance`; Stochastic Length: a training option, measured below |
# | §3.3 Minimizing memory usage | fewer linear layers, no separate feed-forward network, fused operations | `03_stu_layer` (measured), `07_performance` |
# | §3.4 Scaling up inference via cost amortization | M-FALCON | not implemented (below) |
# | §4.1 Validating HSTU's design | synthetic data; public datasets (ML-1M, ML-20M, Amazon Books) against SASRec | `06_training_ml1m` (ML-1M, HSTU and SASRec) |
# | §4.2 Encoder efficiency | HSTU's layer against FlashAttention2-based Transformers, up to 8192 long | `05_triton_kernels` (kernel only; see the reconciliation there), `07_performance` |
# | §4.3 Industrial streaming settings, scaling law | online A/B results, M-FALCON throughput, quality as a power law of compute | not reproducible here (Meta's data and compute) |
#
# ### What the course does not implement
#
# * **Stochastic Length** (§3.2, eq. 4) is no longer missing: it is a training option, off by default. With
#   `--set stochastic_length_alpha=1.6` (any $\alpha \in (1, 2]$), every epoch a training history of $n$ items
#   longer than $L = \lfloor N^{\alpha/2} \rfloor$ ($N$ = `max_seq_len`) is cut to $L$ of its items, in order,
#   with probability $1 - N^\alpha / n^2$, so that attention costs grow more slowly than quadratically;
#   evaluation always reads whole histories. `hstu_tutorial/data/stochastic_length.py` states the rule, and
#   `stochastic_length_selection` picks which items a cut history keeps. Its effect on ML-1M (HSTU, SL off and
#   three values of $\alpha$, two seeds) is measured in
#   `benchmarks/results/h200_2026-12-01/stochastic_length/stochastic_length.md`.
# * **M-FALCON** (§3.4): at ranking time, many candidate items are scored in one pass over a user's history, the
#   history's keys and values computed once and shared across micro-batches of candidates. The course evaluates
#   by scoring the whole catalogue against one output embedding per user (retrieval-style), which needs no such
#   trick.
# * **The scaling law** (§4.3): quality as a power law of training compute across three orders of magnitude,
#   measured on industrial data at up to 1.5 trillion parameters. ML-1M (3,883 movies, about a million ratings)
#   cannot show it; `07_performance` measures speed, not scaling.

# %%
# Stochastic Length on ML-1M, from the committed H200 result file (bench_stochastic_length.py)
import json as _json
from pathlib import Path as _Path

from IPython.display import Markdown as _Markdown, display as _display

_sl_file = _Path(hstu_tutorial.__file__).resolve().parents[1] / "benchmarks/results/h200_2026-12-01/stochastic_length/stochastic_length.json"
if not _sl_file.is_file():
    print("no saved Stochastic Length results in", _sl_file.name)
else:
    _sl = _json.loads(_sl_file.read_text())
    _by = {}
    for _r in _sl["runs"]:
        _by.setdefault(_r["alpha"], []).append(_r)
    _mean = lambda rs, k: sum(r["test"][k] for r in rs) / len(rs)  # noqa: E731
    _off = _by[0.0]
    _lines = []
    for _a, _rs in sorted(_by.items()):
        if _a == 0.0:
            continue
        _e = _sl["expected"][str(_a)]
        _lines.append(f"* alpha {_a}: histories cut to {_e['threshold']} items, {_e['tokens_kept']:.0%} of the training tokens "
                      f"and {_e['attention_kept']:.0%} of the attention cost kept; HR@10 {_mean(_rs, 'hr@10'):.4f}, "
                      f"NDCG@10 {_mean(_rs, 'ndcg@10'):.4f}")
    _display(_Markdown(
        f"Measured on {_sl['machine']} ({_sl['date']}), {_sl['config']}, {_sl['epochs']} epochs, seeds {_sl['seeds']}, "
        f"ML-1M users 1-2999. Without Stochastic Length: HR@10 {_mean(_off, 'hr@10'):.4f}, NDCG@10 "
        f"{_mean(_off, 'ndcg@10'):.4f}.\n\n" + "\n".join(_lines)
        + "\n\nThe trainer's GPU default pads every batch to N for its CUDA graph, so a cut history saves no time "
        "there; the saving is in tokens and attention cost: the jagged layout (`--set layout=jagged`) computes only the kept "
        "tokens."
    ))

# %% [markdown]
# ## How exercises and checks work
#
# Each exercise gives you a function to write, with its equation and shapes, as a **stub** that raises
# `NotImplementedError`. Below it, a **check** runs your function on seeded random cases plus edge cases
# (length 1, the maximum length, several heads, an empty history where legal), compares it with the package's
# reference and says precisely what is wrong. **Hints** unfold one at a time.
#
# * An unsolved stub prints *not attempted yet* and the notebook carries on: later cells use the package's
#   version unless you set `use_mine = True`.
# * A wrong answer gets a specific message: the wrong shape, the first index that differs with both values,
#   a masked position that leaked, a known mistake by name.
# * A passing check ticks its item of your learning checklist (below).
#
# Here is what a check says for an unsolved stub and for a classic mistake (`log10` where the paper uses the
# natural log in the time buckets of notebook 02). Neither ticks anything.

# %% tags=["nbval-check-output"]
import torch


def time_bucket_stub(d):
    raise NotImplementedError("exercise: replace this line with your code")


def time_bucket_log10(d):  # a plausible mistake
    return torch.floor(torch.log10(d.abs().clamp(min=1).float()) / 0.301).long().clamp(0, 128)


ok_stub = checks.check_time_bucket(time_bucket_stub)
ok_log10 = checks.check_time_bucket(time_bucket_log10)

# %% [markdown]
# ## Your learning checklist
#
# This course grew out of a Chinese quick-reference card for the official HSTU code, and its checklist is
# the card's (学习检查清单): four groups, 17 items, in the card's words with an English rendering, plus a
# fifth group, *beyond the card* (超出卡片), for what the course adds. Nothing is ticked by hand. Each item is
# ticked by something you did: an exercise check that passed, a short quiz (the concept items), the data
# loader accepting the real MovieLens files, or a completed `hstu-train` run. Some items have *steps* (the
# exercises that serve them): an item is done when all its steps are, or when its own quiz, check or run
# ticks it. Each row links to where it is taught.
#
# Your ticks are saved in a small JSON file in your home folder (`~/.hstu_tutorial/progress.json`; set
# `HSTU_PROGRESS_FILE` to put it elsewhere), written atomically, so they survive kernel restarts and reboots.
# A damaged file is reported, kept as a dated backup (`progress.json.bak-<UTC time>-<n>`, never overwriting
# an earlier one), and rebuilt. A file from the course's earlier 20-item checklist is migrated on first
# load: each tick moves to the card item or step it belongs to, and the old file is kept as a backup.

# %%
progress.checklist()

# %% [markdown]
# ### A quiz
#
# The concept items (recommender basics, the Transformer, sequence modelling, the HSTU architecture, the
# paper) are ticked by short quizzes. Pick one answer per question and press *Check answers*: every choice
# you make is explained, and when all are right the item is ticked (the table above redraws). Without
# widgets, `print(quiz("basics.recsys"))` shows the questions and `quiz("basics.recsys").answer([...])`
# grades a list of option numbers, one per question. The other quizzes: `quiz("basics.transformer")`,
# `quiz("basics.sequence_modeling")`, `quiz("core.hstu")`, `quiz("advanced.paper")`.

# %%
from hstu_tutorial.quizzes import quiz

quiz("basics.recsys")

# %% [markdown]
# Without Jupyter (in a plain terminal) the same checklist prints as text.

# %%
text = progress.show_checklist()

# %% tags=["nbval-check-output"]
# which exercise check ticks which item or step (a step's id is `<item id>.<step>`)
for item_id in progress.all_ids():
    check = getattr(progress.item(item_id), "check", None)
    if check:
        print(f"{check:<32} -> {item_id}")

# %% [markdown]
# ## Where to start
#
# * New to sequential recommenders: `01_data_format`, then `02_attention_math`.
# * You know Transformers and want the HSTU difference: `02_attention_math` and `03_stu_layer`.
# * You care about speed: `04_jagged_tensors`, `05_triton_kernels`, `07_performance`.
# * You want the numbers: `06_training_ml1m`.
#
# Each notebook runs top to bottom on a CPU in a few minutes with the small preset.
