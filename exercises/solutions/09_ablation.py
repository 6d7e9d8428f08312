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
# # Exercises 09 · Ablation: which parts of HSTU matter?
#
# An **ablation** removes one part of a model, trains it exactly as before, and reads the change in the
# metrics as that part's contribution. HSTU's STU layer (notebook 03) has four parts that a Transformer does
# not have, and the package can switch each one off with a config key:
#
# | variant | config override | what changes in the STU layer |
# |---|---|---|
# | `default` | (none) | $A_{ij} = \mathrm{SiLU}(\langle q_i, k_j\rangle + \mathrm{rab}_{ij}) / n$, $o = u \odot \mathrm{LayerNorm}(A v)$ |
# | `no_pos_bias` | `use_pos_bias = false` | $\mathrm{rab}_{ij}$ loses its position term $p_{j-i}$ (only the time-gap term stays) |
# | `no_time_bias` | `use_time_bias = false` | $\mathrm{rab}_{ij}$ loses its time-gap term (only the position term stays) |
# | `no_gate` | `use_gate = false` | $o = \mathrm{LayerNorm}(A v)$: no $u$ (and no $u$ columns in $W_{uvqk}$) |
# | `softmax` | `attention_activation = "softmax"` | $A_{ij} = \mathrm{softmax}_{j \le i}\big((\langle q_i, k_j\rangle + \mathrm{rab}_{ij})/\sqrt{d_{qk}}\big)$: rows sum to 1, no $n$ |
#
# An ablation is only worth reading if **one thing** changes: the same data, the same seed, the same number of
# epochs, the same batch size and learning rate. Your part: (1) `ablation_overrides(name)`, the config keys of
# each variant; (2) `make_table(runs)`, the result table. The check `checks.check_ablation` reads the configs
# the trainer recorded, so it notices two switches changed at once, another seed or budget, numbers that are
# not the runs' own, and a Δ taken against the wrong row.
#
# **Sizes.** The `small` preset trains on the synthetic data for a few epochs (the notebook takes a couple of
# minutes on a laptop CPU); `real-cpu` trains on MovieLens-1M with a CPU budget (two epochs per variant, the
# longest of the three on a CPU; each run prints its seconds; differences are small and noisy this early);
# `full` (a GPU) trains every variant for the paper's 101 epochs.
#
# > **中文摘要**：消融实验：每次只去掉 HSTU 的一个部件（位置偏置、时间偏置、门控 u、把 SiLU 换成 softmax），
# > 用相同的数据、种子和训练预算重新训练，比较 HR@10 / NDCG@10 的变化。你要写每个变体的配置覆盖
# > `ablation_overrides(name)` 和把训练结果变成表格的 `make_table(runs)`；检查会核对真实的训练记录。

# %% [markdown]
# <!-- SOLUTION ONLY -->
# **Solution version.** The learner notebook `exercises/09_ablation.ipynb` is generated from this one by `tools/make_exercises.py`.

# %%
import json
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Markdown, display

import hstu_tutorial
from hstu_tutorial import checks
from hstu_tutorial.checks.ablation import VARIANTS, reference_overrides, reference_table
from hstu_tutorial.train import train

preset = hstu_tutorial.get_preset()
work = Path(tempfile.mkdtemp(prefix="hstu-ablation-"))  # the runs' folders go here

CONFIG = preset.pick("synthetic/hstu-small", "ml-1m/hstu-sampled-softmax-n128-final",
                     "ml-1m/hstu-sampled-softmax-n128-final")
BUDGET = {"seed": 42, "num_epochs": preset.pick(8, 2, 101)}  # the same for every variant
dataset = preset.load_dataset(protocol="validation", verbose=False)  # one dataset object for all five runs
print(f"{CONFIG} on {preset.dataset}, {BUDGET['num_epochs']} epochs per variant, seed {BUDGET['seed']}; "
      f"variants: {', '.join(VARIANTS)}")


# %% [markdown]
# ## 1. One switch per variant
#
# Write `ablation_overrides(name) -> dict`: the config keys that turn the default HSTU into the variant `name`
# (one of `default`, `no_pos_bias`, `no_time_bias`, `no_gate`, `softmax`; see the table above). The default
# changes nothing. Do not put the seed or the budget here: the runner below adds `BUDGET` to every run.

# %%
def ablation_overrides(name):
    """Config overrides of one ablation variant, e.g. {"use_gate": False} for "no_gate"."""
    # BEGIN SOLUTION
    switch = {
        "default": {},
        "no_pos_bias": {"use_pos_bias": False},
        "no_time_bias": {"use_time_bias": False},
        "no_gate": {"use_gate": False},
        "softmax": {"attention_activation": "softmax"},
    }
    if name not in switch:
        raise KeyError(f"unknown variant {name!r}; choose one of {list(switch)}")
    return switch[name]
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint</summary>
#
# A dict from variant to overrides, e.g. `{"no_gate": {"use_gate": False}, ...}`; the softmax variant sets
# `attention_activation` to `"softmax"`. Every key is a `TrainConfig` field (`hstu-train --set key=value` takes
# the same keys).
# </details>

# %% [markdown]
# ## 2. Train the five variants
#
# Every run gets the same config, dataset and `BUDGET`, plus the variant's overrides, through the package's
# trainer (`train` returns the run's results: the config it used, the per-epoch history, the test metrics of
# the epoch chosen on validation, timings). On a GPU, `attention_impl = "auto"` uses the Triton kernel where it
# applies (SiLU with the full bias or none) and PyTorch for the other variants, and says so.

# %%
try:
    ablation_overrides("default")
    overrides = ablation_overrides
except NotImplementedError:
    print("ablation_overrides: not attempted yet; the runs below use the package's overrides")
    overrides = reference_overrides

runs = {}
for name in VARIANTS:
    runs[name] = train(CONFIG, dataset=dataset, max_seq_len=preset.max_seq_len, protocol="validation",
                       exp_dir=str(work), tensorboard=False, save_checkpoints=False, progress=False,
                       verbose=False, **BUDGET, **overrides(name))
    best = runs[name]["best_by_valid"]
    print(f"{name:13s} best epoch {best['epoch']}: test HR@10 {best['test']['hr@10']:.4f}, "
          f"NDCG@10 {best['test']['ndcg@10']:.4f}; {runs[name]['timing']['train_s']:.1f} s of training")


# %% [markdown]
# ## 3. The result table
#
# Write `make_table(runs) -> DataFrame`: one row per variant (the index: the variant names, `default` first),
# columns `HR@10`, `NDCG@10` (the test metrics of `run["best_by_valid"]["test"]`, keys `"hr@10"`,
# `"ndcg@10"`), `ΔHR@10`, `ΔNDCG@10` (the variant's value **minus the default's**: negative when removing the
# part hurts) and `train_s` (`run["timing"]["train_s"]`). Keep the numbers unrounded; round when printing.

# %%
def make_table(runs):
    """{variant: train() result} -> DataFrame indexed by variant with HR@10, NDCG@10, ΔHR@10, ΔNDCG@10, train_s."""
    # BEGIN SOLUTION
    base = runs["default"]["best_by_valid"]["test"]
    rows = {}
    for name, run in runs.items():
        m = run["best_by_valid"]["test"]
        rows[name] = {"HR@10": m["hr@10"], "NDCG@10": m["ndcg@10"],
                      "ΔHR@10": m["hr@10"] - base["hr@10"], "ΔNDCG@10": m["ndcg@10"] - base["ndcg@10"],
                      "train_s": run["timing"]["train_s"]}
    return pd.DataFrame.from_dict(rows, orient="index")
    # END SOLUTION


# %% tags=["nbval-check-output"]
ok = checks.check_ablation(runs, make_table, ablation_overrides)

# %% [markdown]
# <details><summary>Hint</summary>
#
# Build a dict `{name: {"HR@10": ..., ...}}` and `pd.DataFrame.from_dict(rows, orient="index")`. The Δ of a
# row is that row's metric minus `runs["default"]`'s, so the default row's Δ is 0.
# </details>

# %%
try:
    table = make_table(runs)
except NotImplementedError:
    print("make_table: not attempted yet; the table below is the package's")
    table = reference_table(runs)
print(f"{preset.dataset}, {BUDGET['num_epochs']} epochs, seed {BUDGET['seed']}, test metrics at the epoch "
      "chosen on validation:")
print(table.round(4).to_string())

# %% [markdown]
# ## 4. The picture

# %%
fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
variants = [v for v in VARIANTS if v != "default"]
for ax, col in zip(axes, ("ΔHR@10", "ΔNDCG@10")):
    values = table.loc[variants, col]
    ax.barh(variants, values, color=["tab:red" if x < 0 else "tab:green" for x in values])
    ax.axvline(0, color="black", lw=0.8)
    ax.set_title(f"{col} vs default")
    ax.invert_yaxis()
axes[2].barh(list(VARIANTS), table.loc[list(VARIANTS), "train_s"], color="tab:gray")
axes[2].set_title("training seconds")
axes[2].invert_yaxis()
fig.suptitle(f"HSTU ablations on {preset.dataset} ({BUDGET['num_epochs']} epochs, seed {BUDGET['seed']})")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 5. What the table says
#
# The text below is written from the table of this run: which removal costs the most, which changes little.
# One seed and a short budget make small differences unreliable: the last line compares each Δ with the
# spread you would see from randomness alone, estimated by the standard error of HR@10 over the test users
# (a rough yardstick, not a test).

# %%
users = len(dataset.split("test"))
worst = table.loc[variants, "ΔNDCG@10"].idxmin()
mildest = table.loc[variants, "ΔNDCG@10"].abs().idxmin()
hr = table.loc["default", "HR@10"]
noise = (hr * (1 - hr) / max(users, 1)) ** 0.5  # standard error of HR@10 over the test users
clear = [v for v in variants if abs(table.loc[v, "ΔHR@10"]) > 2 * noise]
words = {"no_pos_bias": "the position bias", "no_time_bias": "the time bias", "no_gate": "the gate u",
         "softmax": "SiLU / n (replaced by a softmax)"}
display(Markdown(
    f"- Removing **{words[worst]}** changes NDCG@10 the most: {table.loc[worst, 'ΔNDCG@10']:+.4f} "
    f"(default {table.loc['default', 'NDCG@10']:.4f}).\n"
    f"- **{words[mildest]}** matters least here: ΔNDCG@10 {table.loc[mildest, 'ΔNDCG@10']:+.4f}.\n"
    f"- The standard error of HR@10 over {users} test users is about {noise:.4f}; "
    + (f"the ΔHR@10 of {', '.join(clear)} exceed twice that." if clear else
       "no ΔHR@10 exceeds twice that: with this budget the table cannot tell the parts apart.")
    + f"\n- Training time: {table['train_s'].min():.1f} to {table['train_s'].max():.1f} s per run "
    "(on a GPU the default and no_gate runs use the Triton kernel, the others PyTorch)."
))

# %% [markdown]
# ### The same study at full size
#
# The five variants of the paper's ML-1M HSTU, 101 epochs each, on ML-1M users 1-2999, two seeds, on one NVIDIA
# H200 (2026-12-01), with the validation protocol and the test metrics at the best validation epoch, as above
# (`benchmarks/ablation_ml1m.py`; the file is `benchmarks/results/h200_2026-12-01/ablation/ablation.json`). Compare
# its order of the variants with yours.

# %%
saved = Path(hstu_tutorial.__file__).resolve().parents[1] / "benchmarks/results/h200_2026-12-01/ablation/ablation.json"
if not saved.is_file():
    print("no saved full-size ablation in", saved.name)
else:
    full = json.loads(saved.read_text())
    frame = pd.DataFrame([{"variant": r["variant"], "seed": r["seed"], "HR@10": r["test"]["hr@10"],
                           "NDCG@10": r["test"]["ndcg@10"]} for r in full["runs"]])
    gpu_table = frame.groupby("variant", sort=False)[["HR@10", "NDCG@10"]].agg(["mean", "std"])
    base = gpu_table.loc["default"]
    gpu_table[("ΔNDCG@10", "mean")] = gpu_table[("NDCG@10", "mean")] - base[("NDCG@10", "mean")]
    display(gpu_table.round(4))
    seed_sd = frame.groupby("variant")["NDCG@10"].std().mean()
    big = [v for v in gpu_table.index if v != "default" and abs(gpu_table.loc[v, ("ΔNDCG@10", "mean")]) > 2 * seed_sd]
    display(Markdown(
        f"{full['machine']}, {full['date']}, {full['epochs']} epochs, seeds {full['seeds']}. The mean spread between "
        f"the two seeds of one variant is {seed_sd:.4f} NDCG@10; "
        + (f"the variants whose change exceeds twice that: {', '.join(big)}." if big else
           "no variant's change exceeds twice that.")
    ))

# %% [markdown]
# ## 6. Your turn
#
# 1. **Seeds.** Re-run the default and the variant that changed most with `seed` 1 and 2 (same budget for
#    both). Is the difference larger than the spread between seeds of the same variant?
# 2. **Budget.** Ablations at a short budget measure how fast a part helps, not how much it helps at the end.
#    Double `num_epochs` for all five runs: does the order of the variants change?
# 3. **Both biases.** Turn off both terms of the relative bias (`use_pos_bias = false`, `use_time_bias =
#    false`): is the loss the sum of the two single ablations? (The check wants one switch per variant, so
#    keep this run outside `runs`.)
# 4. **Your own change.** The switches live in `hstu_tutorial/modules/stu.py` (`STULayer`). Add one of your own
#    (e.g. no LayerNorm on $A v$) behind a new argument, train it with the same budget, and add its row to the
#    table.
