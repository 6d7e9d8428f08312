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
# # 06 · Training and evaluation: HSTU vs SASRec on MovieLens
#
# The paper's ML-1M experiment (Zhai et al., ICML 2024, §4.1.1, Table 2) trains HSTU and the SASRec baseline
# with the *same* recipe and compares full-ranking hit rates. This notebook takes the recipe apart and runs it:
#
# 1. the **loss**: sampled softmax with 128 negatives drawn uniformly from the whole catalogue;
# 2. the **metrics**: HR@K, NDCG@K and MRR from the target's rank among *all* unseen items;
# 3. the **trainer** (`hstu_tutorial.train`): configs, live curves, checkpoints, results;
# 4. HSTU and SASRec trained side by side, a table next to the paper's, attention maps of the trained model,
#    and where HSTU wins (long vs short histories, popular vs rare targets).
#
# On a CPU without MovieLens (preset `small`) the live runs use the synthetic dataset; with ML-1M on disk
# (preset `real-cpu`) they train on the real data for a CPU budget of a few minutes. Whatever needs fully
# trained models (the 101-epoch curves, the table, attention maps, the buckets) is then read from result files
# computed on an NVIDIA H200 (2026-12-01, `benchmarks/results/h200_2026-12-01/ml1m/`, written by
# `benchmarks/collect_ml1m_results.py`). On a GPU (preset `full`) the same functions recompute all of it live.
#
# > **中文摘要**：训练与评估：采样 softmax 损失（128 个负样本）、基于全量排序的 HR@K / NDCG@K / MRR、训练器与配置
# > （检查点、断点续训），并把 HSTU 与 SASRec 的结果与论文并列比较。CPU 上用合成数据几分钟跑完，
# > GPU 上按论文设置训练 ML-1M。动手部分在练习 `exercises/06_training`。

# %%
import json
from pathlib import Path

import pandas as pd
import torch
from IPython.display import Markdown, display

import hstu_tutorial
from hstu_tutorial import viz
from hstu_tutorial import results as gpu_results
from hstu_tutorial.losses import full_softmax_loss, l2_normalize, sampled_softmax_loss
from hstu_tutorial.metrics import item_popularity, metrics_from_ranks, popularity_baseline, target_ranks
from hstu_tutorial.training.report import plural
from hstu_tutorial.train import PAPER_ML1M, REFERENCE_ML1M_U2999, ConfigError, load_config, train

preset = hstu_tutorial.get_preset()
torch.manual_seed(0)
SYNTHETIC = {"HSTU": "synthetic/hstu-small", "SASRec": "synthetic/sasrec-small"}
CONFIGS = preset.pick(SYNTHETIC, gpu_results.CONFIGS, gpu_results.CONFIGS)
# real-cpu: one epoch per model. Measured on a 2-core CPU (ml-1m-u2999, B=128, N=200, PyTorch attention,
# 2026-12-01): an HSTU epoch with its evaluation of both splits takes about 2.2 minutes, SASRec's 1.3.
EPOCHS = preset.pick(preset.num_epochs, 1, 101)
SAVED = None if preset.gpu else gpu_results.load_ml1m_results()  # the H200 runs (full: all recomputed live)

# %% [markdown]
# ## 1 · The loss: sampled softmax
#
# Every position $i$ of a history produces an output embedding $q_i$ (the *query*) and is trained to score the
# item that comes next, $p_i$, above other items. Scores are cosine similarities (all embeddings are
# L2-normalised) divided by a temperature $\tau = 0.05$. Scoring all 3,883 ML-1M movies for each of the
# ~16,000 positions of a batch is what a *full* softmax would do; the paper's recipe instead samples
# $R = 128$ negatives $n_1..n_R$ uniformly from the catalogue, independently for every position:
#
# $$\mathcal{L}_i = -\log \frac{\exp(\langle q_i, e_{p_i}\rangle/\tau)}{\exp(\langle q_i, e_{p_i}\rangle/\tau) + \sum_{r:\, n_r \ne p_i} \exp(\langle q_i, e_{n_r}\rangle/\tau)}$$
#
# A negative that happens to be the positive ("accidental hit") is left out of the sum, and the batch loss is
# the mean over all supervised positions. Below: the package's `sampled_softmax_loss` against the formula
# written out by hand, on a toy catalogue.

# %% tags=["nbval-check-output"]
g = torch.Generator().manual_seed(0)
catalogue = torch.tensor([3, 5, 8, 13, 21, 34])      # (C,) valid item ids, sorted (ids need not be 1..C)
table = torch.randn(35, 4, generator=g)              # item embedding table (num_items + 1, D)
embed = lambda ids: l2_normalize(table[ids])          # the model's item_embeddings
query = torch.randn(5, 4, generator=g)               # (M, D) outputs of 5 positions
positives = torch.tensor([5, 8, 8, 21, 34])          # (M,) the next item of each position
negatives = torch.tensor([[0, 1, 2], [2, 2, 4], [3, 5, 0], [4, 1, 3], [5, 0, 1]])  # (M, R) catalogue positions

tau = 0.05
loss = sampled_softmax_loss(query, positives, embed, catalogue, temperature=tau, negatives=negatives)

# By hand: position 0's positive (item 5) is catalogue position 1, drawn as its own negative: masked.
q = l2_normalize(query)
pos = (q * embed(positives)).sum(-1) / tau                              # (M,)
neg = torch.einsum("md,mrd->mr", q, embed(catalogue[negatives])) / tau  # (M, R)
neg = neg.masked_fill(catalogue[negatives] == positives[:, None], float("-inf"))
by_hand = (-(pos - torch.logsumexp(torch.cat([pos[:, None], neg], 1), 1))).mean()
torch.testing.assert_close(loss, by_hand)
full = full_softmax_loss(query, positives, embed, catalogue, temperature=tau)
print("sampled softmax (3 negatives) = the loss by hand (rel. tol 1e-5):", torch.allclose(loss, by_hand, rtol=1e-5))
print(f"sampled softmax ~ {loss.item():.1f}, full softmax over all 6 items ~ {full.item():.1f}")

# %% [markdown]
# The sampled loss is smaller than the full one: it sees only a few of the competitors. It is also **biased**,
# not merely noisy: averaged over many draws it stays below the full loss, because $R$ uniform negatives stand
# for the $C - 1$ competitors without the factor $(C-1)/R$ that would scale their sum up, and the log of even a
# rescaled sum underestimates on average. Its gradient is biased too: popular items, which the full softmax
# pushes down often, are sampled only as often as any other. The reference trains with it because it is cheap;
# section 4 measures the gap on the model trained there and the dataset this notebook loads.
# In the package, on a CPU, the sampled logits come from one dense product of the queries with the whole
# catalogue (`impl="dense"`, the same numbers as gathering the negatives' embeddings); on a GPU, from two Triton
# kernels that gather each row's 129 item vectors without storing them (`impl="fused"`). For a step of 17,344
# rows and 3,883 items, forward + backward: 7.5 ms for the plain gather, 0.72 ms dense, 0.54 ms fused (NVIDIA
# H200, 2026-12-01, `benchmarks/results/h200_2026-12-01/perf/segments_sasrec/bench_loss.md`; `07_performance`
# reads them).
#
# ## 2 · The metrics: full ranking
#
# At evaluation, the query of a user's last history position scores **every** item of the catalogue; the
# items already in the history window are removed (as the reference does), and the target's rank is
#
# $$\text{rank} = 1 + \#\{c \text{ unseen} : s_c > s_\text{target}\},\qquad \text{HR@}K = [\text{rank} \le K],\qquad \text{NDCG@}K = \frac{[\text{rank} \le K]}{\log_2(\text{rank} + 1)},\qquad \text{MRR} = \frac{1}{\text{rank}}$$
#
# each averaged over users (one relevant item per user, so the ideal DCG is 1).

# %% tags=["nbval-check-output"]
scores = torch.tensor([[0.9, 0.1, 0.5, 0.7], [0.2, 0.8, 0.6, 0.4]])  # (B=2 users, C=4 items) = query @ item embeddings^T
cat = torch.tensor([1, 2, 3, 4])
history = torch.tensor([[1, 0], [2, 4]])                              # seen items (0 = padding)
targets = torch.tensor([3, 3])
ranks = target_ranks(scores, torch.eye(4), cat, targets, history)    # identity "embeddings": the scores as they are
print("ranks:", ranks.tolist())                                       # user 0: item 1 removed, 4 beats 3 -> 2; user 1: 2 and 4 removed -> 1
print({k: round(v, 4) for k, v in metrics_from_ranks(ranks, ks=(1, 10)).items()})

# %% [markdown]
# Only one output per user is scored: the last position's. Attention is causal, so in the **last** block no
# other position's output ever reaches it; that block still needs every position's keys and values, but only
# one query per history. `model.query_embeddings(batch)` runs the blocks before as usual and the last one for
# the last positions only: its attention costs O(N) per history instead of O(N²), and SASRec's FFN runs on B
# rows instead of B·N. Below, on random histories, it gives the same queries as the full forward; the trainer's
# evaluation uses it. The H200 figures printed last (`benchmarks/bench_eval_last.py`) show where it pays: run
# eagerly, HSTU's shortcut is slower than its full forward (a dozen small PyTorch launches replace one Triton
# kernel launch), while inside the trainer's CUDA graph, where launches cost nothing, it is faster than the
# graph of the full forward (that figure is from the same day's run before the change,
# `benchmarks/results/h200_2026-12-01/perf/loss_rows_eval_graph/`); SASRec's is faster either way.

# %% tags=["nbval-check-output"]
from hstu_tutorial.modules import hstu_encoder, sasrec_encoder
from hstu_tutorial.perf import random_jagged_batch

histories = random_jagged_batch([7, 1, 12, 20, 3], max_len=20, num_items=50, seed=0)
for name, build in (("HSTU", hstu_encoder), ("SASRec", sasrec_encoder)):
    model = build(50, embedding_dim=16, max_seq_len=20).eval()
    with torch.no_grad():
        full_forward = model.last_embeddings(model(histories), histories)  # (B, D): every position, keep the last
        shortcut = model.query_embeddings(histories)                         # (B, D): last block at the last positions
    print(f"{name}: the shortcut equals the full forward's last rows (within 1e-5):",
          torch.allclose(shortcut, full_forward, atol=1e-5))
ROOT = Path.cwd().resolve().parent if Path.cwd().name == "notebooks" else Path.cwd().resolve()
run = json.loads((ROOT / "benchmarks/results/h200_2026-12-01/perf/eval_last/bench_eval_last.json").read_text())
before = json.loads((ROOT / "benchmarks/results/h200_2026-12-01/perf/loss_rows_eval_graph/bench_eval_graph.json").read_text())
graph_before = {r["model"]: r["graph_ms"] for r in before["rows"]}  # the trainer's graph of the full forward
print(f"valid + test on an {run['machine']['device']} ({run['machine']['date_utc'][:10]}), ms:")
for row in run["rows"]:
    ms = row["ms"]
    print(f"  {row['model']:6s} {row['users_ranked']:,} users: eager full forward {ms['full']:.1f}, eager shortcut {ms['last']:.1f}; "
          f"as a CUDA graph: full forward {graph_before[row['model']]:.1f}, shortcut {ms['trainer']:.1f}")

# %% [markdown]
# ## 3 · The trainer and its configs
#
# `hstu_tutorial/configs/` holds TOML files named after the reference's frozen configs
# (`ml-1m/hstu-sampled-softmax-n128-final`, `...-large-final`, `sasrec-sampled-softmax-n128-final`, the same for
# `ml-100k/`) and small synthetic ones. The command line and the Python API take the same names; any key can
# be overridden, and a key that does not exist is refused with the list of valid ones:
#
#     python -m hstu_tutorial.train --config ml-1m/hstu-sampled-softmax-n128-final --set num_epochs=20

# %% tags=["nbval-check-output"]
cfg = load_config("ml-1m/hstu-sampled-softmax-n128-final")
print({k: getattr(cfg, k) for k in ("model", "num_blocks", "num_heads", "dqk", "embedding_dim", "dropout", "loss",
                                    "num_negatives", "temperature", "batch_size", "learning_rate", "betas", "num_epochs")})
try:
    load_config("ml-1m/hstu-sampled-softmax-n128-final", ["learning_rte=0.01"])
except ConfigError as err:
    print("ConfigError:", str(err)[:120], "...")

# %% [markdown]
# What the trainer does each epoch: shuffle the users, take steps of 128 histories (every position supervised),
# then evaluate **both** the validation and the test targets with full ranking. Nothing is copied back to the
# host during an epoch (the loss is summed on the device), so a GPU never waits for Python; on CUDA the whole
# step (forward, backward, AdamW) is replayed as one CUDA graph. It writes TensorBoard logs, `ckpt_last.pt` /
# `ckpt_best.pt` (loaded with `weights_only=True`; Ctrl-C saves a checkpoint, `--set resume=...` continues
# bit-for-bit) and `results.json` / `results.md` under `exps/<dataset>-l<max_seq_len>/<run>/`.
#
# Two protocols: **reference** (train on everything but each user's last item; report the test metrics of the
# last epochs, as the paper's code does) and **validation** (hold out the second-to-last item too, pick the
# epoch by validation NDCG@10, report test there). The results give both views side by side.
#
# ## 4 · HSTU and SASRec, same recipe, live curves

# %%
cfg_hstu = load_config(CONFIGS["HSTU"], num_epochs=EPOCHS, progress=False)
ds = preset.load_dataset(protocol=cfg_hstu.protocol, stable_sort=cfg_hstu.stable_sort)  # ML-1M, or synthetic
live = viz.LiveCurves(metrics=("loss", "hr@10", "ndcg@10"), splits=("valid", "test"))
results = {"HSTU": train(cfg_hstu, dataset=ds, callback=live.new_run("HSTU"))}

# %%
cfg_sasrec = load_config(CONFIGS["SASRec"], num_epochs=EPOCHS, progress=False)
results["SASRec"] = train(cfg_sasrec, dataset=ds, callback=live.new_run("SASRec"))  # its curves join the figure above
print({name: f"{r['timing']['train_eval_s']:.1f} s for {plural(r['epochs_run'], 'epoch')}" for name, r in results.items()})
t_h, t_s = (results[m]["timing"]["train_eval_s"] for m in ("HSTU", "SASRec"))
impl = {m: results[m]["attention_impl"] for m in ("HSTU", "SASRec")}
display(Markdown(
    f"HSTU took {t_h:.1f} s and SASRec {t_s:.1f} s ({t_h / t_s:.1f}x) on {results['HSTU']['device']}. The two "
    "models are of a size (a few tens of thousands of weights beside the item table); the gap is the attention "
    f"code: SASRec's runs as `{impl['SASRec']}`, one fused PyTorch kernel, while HSTU's runs as `{impl['HSTU']}`"
    + (", the padded PyTorch version: scores, bias, SiLU and mask as separate tensors of (B, N, N), forward and "
       "backward. On a GPU, `attention_impl=auto` picks the Triton kernel of notebook 05 instead."
       if impl["HSTU"] == "pytorch" else ".")
))

# %% [markdown]
# The curves of the full recipe come from the GPU runs: HSTU and SASRec, 101 epochs, four seeds each (line: mean
# over seeds, band: lowest to highest seed). With ML-1M on this machine they share the axes with the live runs
# above; on the synthetic data they get their own figure, since the two datasets' numbers do not compare.

# %%
if SAVED is not None:
    if ds.name == "ml-1m":
        fig, _ = viz.plot_training_curves(live.runs)
        fig, _ = viz.plot_seed_curves(SAVED.curves, axes=fig.axes[:3], label=SAVED.label)
        fig.suptitle(f"lines with markers: live on this CPU, {plural(EPOCHS, 'epoch')}; bands: {SAVED.label}",
                     fontsize=9)
    else:
        fig, _ = viz.plot_seed_curves(SAVED.curves, label=SAVED.label)
        fig.suptitle(f"ML-1M, {SAVED.label} (the live runs above are the synthetic dataset)", fontsize=9)
    fig.tight_layout()
elif preset.gpu:
    print("preset full: the curves above are the live 101-epoch runs")

# %% [markdown]
# ### The sampled loss against the full one
#
# On the trained HSTU and one batch of training histories: the full softmax loss over the whole catalogue, the
# sampled loss the model was trained with over 20 independent draws of negatives, and the sampled loss with
# the negatives' sum scaled by $(C-1)/R$ (the correction a uniform sampler calls for).

# %%
svf = gpu_results.sampled_vs_full(results["HSTU"]["trainer"], num_users=32, draws=20, seed=0)
print(f"live, {plural(EPOCHS, 'epoch')}: {svf['positions']:,} positions, catalogue C={svf['catalogue']}, "
      f"R={svf['negatives']} negatives")
print(f"full softmax {svf['full']:.3f} | sampled {svf['sampled_mean']:.3f} +- {svf['sampled_std']:.3f} | "
      f"sampled, rescaled {svf['rescaled_mean']:.3f} +- {svf['rescaled_std']:.3f}")
display(Markdown(gpu_results.sampled_markdown(svf, ds.name, where=f"Live, after {plural(EPOCHS, 'epoch')}: ")))
if SAVED is not None and SAVED.sampled_vs_full:
    saved_svf = SAVED.sampled_vs_full
    display(Markdown(gpu_results.sampled_markdown(
        saved_svf, "ml-1m", where=f"The HSTU trained for {int(SAVED.runs['epochs'].max())} epochs (seed {saved_svf['seed']}, {SAVED.machine}, "
        f"{SAVED.date}): ")))

# %% [markdown]
# ## 5 · Results next to the paper
#
# The table shows, per model, the test metrics as the reference reports them (mean of the last 10 epochs) and
# at the epoch with the best validation NDCG@10, next to the paper's full-ML-1M numbers and the reference code
# run on our data (ML-1M users 1-2999, `docs/reference_results.md`). On a CPU the "ours" rows are the live runs of
# section 4 (the synthetic dataset on `small`, one epoch of ML-1M on `real-cpu`): they show the machinery, not
# the paper's numbers; the GPU results follow below.

# %%
on_movielens = ds.name == "ml-1m"
frame = viz.results_frame(results, reference=REFERENCE_ML1M_U2999 if on_movielens else None, paper=PAPER_ML1M)
if SAVED is not None:  # CPU presets: the H200's four seeds beside the live runs, so the chart shows both
    h200 = SAVED.runs.groupby("model", sort=False)[["hr@10", "ndcg@10", "hr@50", "ndcg@50", "mrr"]].mean()
    h200_rows = pd.DataFrame([{"model": m, "source": f"ours, {SAVED.label} (epochs {SAVED.runs['window'].iloc[0]})", **row}
                              for m, row in h200.iterrows()])
    frame = pd.concat([frame, h200_rows], ignore_index=True)
pop = popularity_baseline(ds, "test", ks=(10, 50))
print(f"dataset {ds.name}: most-popular baseline HR@10 {pop['hr@10']:.4f}, NDCG@10 {pop['ndcg@10']:.4f}")
frame.round(4)

# %%
fig, table = viz.plot_results_bars(frame, "hr@10")

# %% [markdown]
# ### Four seeds of the full recipe (NVIDIA H200, 2026-12-01)
#
# HSTU and SASRec, 101 epochs, seeds 42, 1, 2 and 3, on `ml-1m-u2999`, test metrics as the reference reports
# them (mean of epochs 91-100), mean ± standard deviation over the seeds, next to the official
# implementation on the same data and the paper's full-ML-1M figures. On a CPU these come from
# `benchmarks/results/h200_2026-12-01/ml1m/runs.json`; on a GPU (preset `full`) the cell trains seeds 1-3 of
# both models here (section 4's runs are seed 42) and computes the same table, the buckets of section 7 and the
# attention statistics of section 6 with the same functions (`hstu_tutorial.results`).

# %%
if preset.gpu:  # live: the other seeds of both models, on the dataset loaded above
    more_runs, more_buckets, _ = gpu_results.collect(
        ds, CONFIGS, seeds=gpu_results.SEEDS[1:], overrides={"num_epochs": EPOCHS, "progress": False,
        "tensorboard": False, "save_checkpoints": False}, keep=None)
    popularity = item_popularity(ds, "train").numpy()
    first = [gpu_results.run_record(m, cfg.seed, r, {}) for (m, r), cfg in zip(results.items(), (cfg_hstu, cfg_sasrec))]
    first_buckets = [gpu_results.bucket_table(r["trainer"].per_user_ranks("test"), popularity).assign(model=m, seed=cfg.seed)
                     for (m, r), cfg in zip(results.items(), (cfg_hstu, cfg_sasrec))]
    SHOWN = gpu_results.results_from_runs(first + more_runs, pd.concat([*first_buckets, more_buckets], ignore_index=True))
else:
    SHOWN = SAVED
if SHOWN is not None:
    display(Markdown(f"**{SHOWN.label}**, test metrics (mean of epochs {SHOWN.runs['window'].iloc[0]}):"))
    display(gpu_results.seed_table(SHOWN.runs, paper=PAPER_ML1M, reference=REFERENCE_ML1M_U2999))

# %% [markdown]
# ### The GPU runs (one NVIDIA H200, 2026-11-28, `benchmarks/results/h200_2026-11-28/training.md`)
#
# Saved results of the full recipe on `ml-1m-u2999` (ML-1M's users 1-2999), 101 epochs, every epoch evaluating
# all validation and test users, with the reference's order of same-second ratings: like for like with the
# reference code run on the same data and GPU (`reference` columns, `docs/reference_results.md`). Each model was trained with four
# seeds in TF32 (the reference's precision) and once in bf16 autocast (`--set bf16=true`). Ours are averaged over
# the same epochs as the reference's figure (91-100; 57-66 for HSTU-large, whose reference run stopped at 66).
#
# The reference figure is one run. The spread between our seeds shows how far apart two runs of the same recipe
# land. Compare the gap to the reference with that spread before reading anything into it.

# %%
import re

results_dir = Path(hstu_tutorial.__file__).resolve().parents[1] / "benchmarks" / "results" / "h200_2026-11-28"
MODEL_NAMES = {"hstu": "HSTU", "hstu-large": "HSTU-large", "sasrec": "SASRec"}
gpu_rows = []
for precision, name in (("tf32", "training_seeds_tf32.json"), ("bf16", "training_bf16.json")):
    saved = results_dir / name
    if not saved.is_file():
        print("no saved GPU results in", saved)
        continue
    for r in json.loads(saved.read_text()):
        if "hr@10" in r and "anchor" in r:
            ours = r["ours_in_anchor_window"]  # the epochs the reference's figure averages
            model = re.sub(r"-s\d+$", "", r["run"].removeprefix("ml1m-"))  # ml1m-hstu-large-s2 -> hstu-large
            gpu_rows.append({"model": MODEL_NAMES.get(model, model), "precision": precision, "seed": r["seed"],
                             "epochs averaged": r["anchor_window"], "HR@10": ours["hr@10"],
                             "NDCG@10": ours["ndcg@10"], "reference HR@10": r["anchor"]["hr@10"],
                             "reference NDCG@10": r["anchor"]["ndcg@10"],
                             "seconds (101 epochs + eval)": round(r["train_eval_s"], 1),
                             "reference seconds": r["anchor_s_101"]})
if gpu_rows:
    gpu = pd.DataFrame(gpu_rows)
    summary = gpu.groupby(["model", "precision"]).agg(
        runs=("seed", "size"), hr10=("HR@10", "mean"), hr10_std=("HR@10", "std"), ndcg10=("NDCG@10", "mean"),
        ndcg10_std=("NDCG@10", "std"), ref_hr10=("reference HR@10", "first"), ref_ndcg10=("reference NDCG@10", "first"),
        seconds=("seconds (101 epochs + eval)", "mean"), ref_seconds=("reference seconds", "first"))
    summary["speed-up"] = (summary["ref_seconds"] / summary["seconds"]).round(1)
    display(summary.round(4))
    fig = viz.plot_seed_spread(gpu)

# %% [markdown]
# ## 6 · What the trained HSTU attends to
#
# The attention maps of the trained HSTU (seed 42, 101 epochs) for three real users, over the last 12 items of
# each history, with their titles and the film each user rated next. HSTU's weights are $\mathrm{SiLU}(\cdot)/n$,
# not a softmax: rows need not sum to one and weights can be negative (blue). Below the maps, statistics of
# every layer's weights over **all** test users say what each head attends to. On a CPU both come from
# `attention.json` (NVIDIA H200, 2026-12-01); on a GPU they are computed here from the model of section 4.

# %%
if preset.gpu:
    hstu = results["HSTU"]["trainer"].model
    attention = {"record": gpu_results.attention_record(hstu, ds, gpu_results.attention_users(ds)),
                 "summary": gpu_results.attention_summary(hstu, ds, "test")}
    source = f"live: the HSTU trained above ({plural(EPOCHS, 'epoch')}, {results['HSTU']['device']})"
elif SAVED is not None and SAVED.attention:
    attention = SAVED.attention
    source = f"saved: the seed-{attention['seed']} HSTU, {int(SAVED.runs['epochs'].max())} epochs ({SAVED.machine}, {SAVED.date})"
else:
    attention = None
    print("no attention maps of a trained HSTU to show (no saved GPU results, and no GPU here)")
if attention is not None:
    for user in attention["record"]["users"]:
        fig, _ = viz.plot_saved_attention(user)
    display(Markdown(f"{source}; users: {attention['record']['rule']}.\n\n"
                     + gpu_results.attention_markdown(attention["summary"])))

# %% [markdown]
# ## 7 · Where does HSTU win?
#
# The per-user ranks of both models, grouped by the length of the user's history and by how popular the target
# item is in the training data (quantile buckets, rare to popular). Whether HSTU's margin grows with the length
# of the history, or sits on the rare targets, is a question for the data: each cell states what its runs show.
# On a CPU the first cell shows the live runs of section 4 (one seed); the next one the four-seed GPU runs.

# %%
if not preset.gpu:  # the live runs of section 4: one seed, few epochs
    per_user = {name: r["trainer"].per_user_ranks("test") for name, r in results.items()}
    popularity = item_popularity(ds, "train").numpy()
    bins = (0, 20, 50, 100, 200, 10**9) if on_movielens else (0, 35, 45, 10**9)
    fig, wins = viz.plot_where_model_wins(per_user, popularity, k=10, length_bins=bins)
    fig.suptitle(f"live on this CPU: {ds.name}, {plural(EPOCHS, 'epoch')}, one seed", fontsize=9)
    fig.tight_layout()
    lines = []
    for what, table in wins.items():
        gap = (table["HSTU HR@10"] - table["SASRec HR@10"]).astype(float)
        buckets = [str(k) for k in gap.index]
        trend = ("grows" if gap.is_monotonic_increasing else "shrinks" if gap.is_monotonic_decreasing else "varies")
        lines.append(f"* by {what.replace('by_', '')}: HSTU - SASRec HR@10 {trend} from the first bucket ({buckets[0]}: "
                     f"{gap.iloc[0]:+.3f}) to the last ({buckets[-1]}: {gap.iloc[-1]:+.3f}); largest in {gap.idxmax()} "
                     f"({gap.max():+.3f}), smallest in {gap.idxmin()} ({gap.min():+.3f}).")
    display(Markdown(f"What the live run on `{ds.name}` ({plural(EPOCHS, 'epoch')}, one seed) shows:\n\n" + "\n".join(lines)
                     + "\n\nOne seed and few epochs: differences of a few hundredths are within noise."))

# %% [markdown]
# The same comparison for the full recipe, four seeds per model: bars are the mean over seeds, error bars the
# standard deviation over seeds. Buckets: history length (0, 20], (20, 50], (50, 100], (100, 200]; target
# popularity in five quantile buckets of the targets' training counts (rare to popular). The statement below
# the figure is computed from the table.

# %%
if SHOWN is not None and SHOWN.buckets is not None:
    fig, bucket_means = viz.plot_bucket_bars(
        SHOWN.buckets, "hr@10", title=f"HSTU vs SASRec, ML-1M test HR@10 by bucket ({SHOWN.label}); error bars: std over seeds")
    display(Markdown(gpu_results.bucket_markdown(SHOWN.buckets, "hr@10")))
    display(gpu_results.bucket_gaps(SHOWN.buckets, "hr@10").round(4))

# %% [markdown]
# Read the buckets together with the table of section 5: the overall margin there (and the published one,
# computed in `00_overview`) is an average over these buckets, and the buckets show where it comes from. Only
# the gaps beyond the seed spread say something about the models rather than about one run.
#
# ## 8 · Next
#
# * The same runs from a shell: `python -m hstu_tutorial.train --config ml-1m/hstu-sampled-softmax-n128-final`
#   (add `--set data_dir=data/ml-1m-u2999` for the subset), `hstu-train --list` for the configs,
#   `tensorboard --logdir exps` for the curves.
# * Interrupt a run with Ctrl-C and continue it with `--set resume=exps/<dataset>-l200/<run>/ckpt_last.pt`.
# * `07_performance` measures the speed levers the trainer uses (CUDA graphs, padded vs jagged, bf16, Triton).
