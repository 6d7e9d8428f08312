"""The learning checklist's contents: the card's 4 groups and 17 items, their sub-steps, and the old ids.

The course grew out of a Chinese quick-reference card for the official HSTU code. Its learning checklist
(学习检查清单) is kept here in its order and its words, each with an English rendering. Each item says
where it is taught (`taught`: notebook and section) and what ticks it: an auto-graded quiz (`quiz`), an
exercise check (`check`: a `hstu_tutorial.checks` function), something the learner ran (`by`), or, where
that exercise is still to be written, `planned`. Finer steps (`steps`) are the exercises that serve an
item; an item is done when all its steps are done, or when its own tick happens (quiz, check or run).
A fifth group, "beyond the card" (超出卡片), holds what the course adds that serves no card item.

`MIGRATION` maps the ids of the course's earlier 20-item checklist to these ids, so saved progress
carries over (see `hstu_tutorial.progress.store`).
"""

from __future__ import annotations

from dataclasses import dataclass

# group key -> (中文, English), in the card's order
GROUPS: dict[str, tuple[str, str]] = {
    "basics": ("基础概念", "Basic concepts"),
    "core": ("核心算法", "Core algorithms"),
    "practice": ("实践能力", "Practical skills"),
    "advanced": ("进阶技能", "Advanced skills"),
    "beyond": ("超出卡片", "Beyond the card"),
}

Section = tuple[str, str]  # (notebook or exercise path without .ipynb, section title)


@dataclass(frozen=True)
class Step:
    """A finer step of an item (`<item id>.<step>`), ticked by an exercise check or still `planned`."""

    id: str
    en: str
    taught: tuple[Section, ...]
    check: str | None = None
    planned: str | None = None  # what will tick it, while that exercise does not exist yet

    @property
    def ticked_by(self) -> str:
        return self.check or f"planned: {self.planned}"


@dataclass(frozen=True)
class Item:
    """One line of the card's checklist (or of the "beyond the card" group)."""

    id: str
    group: str  # a key of GROUPS
    zh: str
    en: str
    taught: tuple[Section, ...]
    check: str | None = None  # a check that ticks the item itself
    quiz: bool = False  # `hstu_tutorial.quizzes.quiz(id)` ticks the item itself
    by: str | None = None  # an action that ticks the item itself (data loader, training CLI)
    planned: str | None = None  # what will tick the item itself, while it does not exist yet
    steps: tuple[Step, ...] = ()

    @property
    def ticked_by(self) -> str:
        """What ticks the item, in words: its own tick, then "or all of its steps"."""
        own = [
            f"quiz('{self.id}')" if self.quiz else None,
            self.check,
            self.by,
            f"planned: {self.planned}" if self.planned else None,
        ]
        words = " or ".join(w for w in own if w)
        if self.steps:
            words = f"{words}, or all its steps" if words else "all its steps"
        return words


def _steps(item_id: str, *steps: tuple) -> tuple[Step, ...]:
    return tuple(
        Step(f"{item_id}.{sid}", en, taught, check, planned) for sid, en, taught, check, planned in steps
    )


_EX01, _EX02, _EX03 = "exercises/01_data", "exercises/02_attention", "exercises/03_stu"
_EX04, _EX05, _EX06 = "exercises/04_jagged", "exercises/05_triton", "exercises/06_training"
_EX00, _EX08 = "exercises/00_pytorch", "exercises/08_config_and_tuning"
_NB00, _NB01, _NB02 = "notebooks/00_overview", "notebooks/01_data_format", "notebooks/02_attention_math"
_NB03, _NB04, _NB05 = "notebooks/03_stu_layer", "notebooks/04_jagged_tensors", "notebooks/05_triton_kernels"
_NB06, _NB07, _NB08 = "notebooks/06_training_ml1m", "notebooks/07_performance", "notebooks/08_troubleshooting"
_WHAT_HSTU = (_NB00, "What HSTU is, and why it matters")

ITEMS: tuple[Item, ...] = (
    # 基础概念 Basic concepts
    Item(
        "basics.recsys",
        "basics",
        "理解推荐系统基本原理",
        "Understand the basic principles of recommender systems",
        (
            _WHAT_HSTU,
            (_NB01, "3. The split protocol: leave-one-out"),
            (_NB06, "2 · The metrics: full ranking"),
        ),
        quiz=True,
    ),
    Item(
        "basics.transformer",
        "basics",
        "掌握 Transformer 架构",
        "Master the Transformer architecture",
        (
            (_NB02, "1. Softmax attention, from the formula"),
            (_NB03, "2. STU layer vs Transformer block: parameters, FLOPs, activation memory"),
        ),
        quiz=True,
    ),
    Item(
        "basics.sequence_modeling",
        "basics",
        "了解序列建模问题",
        "Know the sequence-modelling problem",
        (_WHAT_HSTU, (_NB01, "2. Per-user sequences"), (_NB01, "3. The split protocol: leave-one-out")),
        quiz=True,
        steps=_steps(
            "basics.sequence_modeling",
            (
                "user_sequences",
                "Build time-sorted per-user sequences from a ratings table",
                ((_EX01, "1. Per-user sequences"),),
                "check_user_sequences",
                None,
            ),
            (
                "leave_one_out",
                "Build the leave-one-out train / valid / test examples",
                ((_EX01, "2. The leave-one-out split"),),
                "check_leave_one_out",
                None,
            ),
        ),
    ),
    Item(
        "basics.pytorch",
        "basics",
        "熟悉 PyTorch 基础",
        "Be familiar with PyTorch basics",
        (
            (_EX00, "Exercises 00: a PyTorch warm-up"),
            (_NB02, "1. Softmax attention, from the formula"),
            (_NB04, "2. Offsets and conversions"),
        ),
        steps=_steps(
            "basics.pytorch",
            (
                "broadcasting",
                "Compute all pairwise scores of two batches by broadcasting",
                ((_EX00, "1. Broadcasting: all pairwise scores"),),
                "check_pairwise_scores",
                None,
            ),
            (
                "masking",
                "Apply a causal + padding mask before a softmax, with no NaN",
                ((_EX00, "2. Masking: causal and padding"),),
                "check_masked_softmax",
                None,
            ),
            (
                "autograd",
                "Compute per-batch gradients with backward(), cleared between batches",
                ((_EX00, "3. Autograd: one gradient per batch"),),
                "check_batch_gradients",
                None,
            ),
            (
                "training_loop",
                "Write a training loop that fits a small model",
                ((_EX00, "4. A training loop"),),
                "check_training_loop",
                None,
            ),
        ),
    ),
    # 核心算法 Core algorithms
    Item(
        "core.hstu",
        "core",
        "理解 HSTU 架构",
        "Understand the HSTU architecture",
        (_WHAT_HSTU, (_NB03, "1. The layer, one line at a time")),
        quiz=True,
        steps=_steps(
            "core.hstu",
            (
                "stu_forward",
                "Implement the STU layer's forward pass (projections, u-gating, Norm(A v))",
                ((_EX03, "Exercises 03: the STU layer"),),
                "check_stu_forward",
                None,
            ),
        ),
    ),
    Item(
        "core.attention",
        "core",
        "掌握注意力机制",
        "Master the attention mechanism",
        (
            (_NB02, "1. Softmax attention, from the formula"),
            (_NB02, "2. HSTU's pointwise attention"),
            (_NB02, "3. The relative attention bias: positions and time"),
        ),
        steps=_steps(
            "core.attention",
            (
                "softmax_attention",
                "Implement causal, padding-aware softmax attention (SASRec)",
                ((_EX02, "1. Softmax attention (the SASRec baseline)"),),
                "check_softmax_attention",
                None,
            ),
            (
                "hstu_attention",
                "Implement HSTU pointwise attention: SiLU(q k^T + rab) / n, causal",
                ((_EX02, "2. HSTU pointwise attention"),),
                "check_hstu_attention",
                None,
            ),
            (
                "time_bucket",
                "Implement the log time bucket of the relative attention bias",
                ((_EX02, "3. The time bucket of the relative attention bias"),),
                "check_time_bucket",
                None,
            ),
            (
                "relative_bias",
                "Build the relative attention bias: pos_w[L-1+j-i] plus the time "
                "part from the next item's timestamp",
                (
                    (_EX02, "4. Build the relative attention bias"),
                    (_NB02, "3. The relative attention bias: positions and time"),
                ),
                "check_relative_attention_bias",
                None,
            ),
        ),
    ),
    Item(
        "core.sampled_softmax",
        "core",
        "了解 Sampled Softmax",
        "Know sampled softmax",
        ((_NB06, "1 · The loss: sampled softmax"),),
        steps=_steps(
            "core.sampled_softmax",
            (
                "loss",
                "Implement the sampled softmax loss (L2-normalised, temperature, hits masked)",
                ((_EX06, "1. Sampled softmax"),),
                "check_sampled_softmax_loss",
                None,
            ),
        ),
    ),
    Item(
        "core.jagged",
        "core",
        "理解 Jagged Tensors",
        "Understand jagged tensors",
        (
            (_NB04, "2. Offsets and conversions"),
            (_NB04, "3. Jagged attention equals padded + masked attention"),
        ),
        steps=_steps(
            "core.jagged",
            (
                "offsets",
                "Compute offsets from lengths",
                ((_EX04, "1. Offsets from lengths"),),
                "check_lengths_to_offsets",
                None,
            ),
            (
                "jagged_to_padded",
                "Convert a jagged batch to a padded one with its offsets",
                ((_EX04, "2. Jagged → padded"),),
                "check_jagged_to_padded",
                None,
            ),
            (
                "jagged_attention",
                "Compute HSTU attention on a jagged batch, with no padded copy",
                ((_EX04, "3. HSTU attention on a jagged batch"),),
                "check_jagged_hstu_attention",
                None,
            ),
        ),
    ),
    # 实践能力 Practical skills
    Item(
        "practice.download",
        "practice",
        "成功下载数据集",
        "Download the data set successfully",
        ((_NB01, "1. The raw files"),),
        by="the data loader: get_reco_dataset('ml-1m') after the md5 of ml-1m.zip matched, or a complete "
        "ML-1M / ML-100K folder accepted (synthetic data does not count)",
    ),
    Item(
        "practice.train_script",
        "practice",
        "运行训练脚本",
        "Run the training script",
        ((_NB06, "3 · The trainer and its configs"),),
        by="a completed run of `hstu-train --config ...` (python -m hstu_tutorial.train)",
    ),
    Item(
        "practice.config",
        "practice",
        "理解配置文件",
        "Understand the config files",
        ((_NB06, "3 · The trainer and its configs"), (_EX08, "1. A config file")),
        steps=_steps(
            "practice.config",
            (
                "toml",
                "Write the TOML config of a described run, read by the project's loader",
                ((_EX08, "1. A config file"),),
                "check_config_file",
                None,
            ),
            (
                "gin",
                "Map the official gin bindings to the project's config keys",
                ((_EX08, "2. Reading an official gin file"),),
                "check_gin_mapping",
                None,
            ),
        ),
    ),
    Item(
        "practice.tuning",
        "practice",
        "调整超参数",
        "Tune hyperparameters",
        ((_NB08, "3. Poor results"), (_EX08, "3. A small sweep, chosen on validation")),
        check="check_tuning",
    ),
    Item(
        "practice.analysis",
        "practice",
        "分析实验结果",
        "Analyse experiment results",
        ((_NB06, "5 · Results next to the paper"), (_NB06, "7 · Where does HSTU win?")),
        steps=_steps(
            "practice.analysis",
            (
                "metrics",
                "Compute HR@K and NDCG@K from full-ranking scores",
                ((_EX06, "2. HR@K and NDCG@K"),),
                "check_hr_ndcg",
                None,
            ),
            (
                "per_bucket",
                "Compute per-bucket metrics from a run's saved per-user ranks",
                ((_NB06, "7 · Where does HSTU win?"), (_EX06, "3. Per-bucket analysis from saved ranks")),
                "check_per_bucket",
                None,
            ),
        ),
    ),
    # 进阶技能 Advanced skills
    Item("advanced.paper", "advanced", "阅读 HSTU 论文", "Read the HSTU paper", (_WHAT_HSTU,), quiz=True),
    Item(
        "advanced.performance",
        "advanced",
        "理解性能优化",
        "Understand performance optimisation",
        (
            (_NB04, "4. Time and memory on this machine"),
            (_NB05, "4 · Causal tile skipping and jagged offsets, in a picture"),
            (_NB07, "2. Measuring the levers here"),
        ),
        steps=_steps(
            "advanced.performance",
            (
                "triton_jagged",
                "Write a Triton kernel over a jagged batch (program ids, blocks, masks)",
                ((_EX05, "1. A jagged kernel: jagged → padded"),),
                "check_triton_jagged_to_padded",
                None,
            ),
            (
                "triton_forward",
                "Write HSTU attention's forward tile loop in Triton (causal tile skipping)",
                ((_EX05, "2. The HSTU forward tile loop"),),
                "check_triton_hstu_forward",
                None,
            ),
        ),
    ),
    Item(
        "advanced.modify_arch",
        "advanced",
        "修改模型架构",
        "Modify the model architecture",
        (
            (_NB03, "1. The layer, one line at a time"),
            ("exercises/09_ablation", "Exercises 09 · Ablation: which parts of HSTU matter?"),
        ),
        check="check_ablation",
    ),
    Item(
        "advanced.new_dataset",
        "advanced",
        "应用到新数据集",
        "Apply it to a new data set",
        (("exercises/07_project", "Exercises 07 · Project: apply HSTU to a new dataset"),),
        check="check_project_results",
    ),
    # 超出卡片 Beyond the card
    Item(
        "beyond.read_new_format",
        "beyond",
        "把新数据集的原始格式读成评分表",
        "Read a new data set's raw format into the ratings table the pipeline expects",
        (("exercises/07_project", "1. Read the raw file"),),
        check="check_ratings_table",
    ),
)

# checks of one part of a step: they report on their part and tick nothing (the step's own check ticks it)
PART_CHECKS: dict[str, str] = {
    "check_position_bias": "core.attention.relative_bias",
    "check_time_bias": "core.attention.relative_bias",
}

# the earlier 20-item checklist's ids -> the id (item or step) that now holds the same tick
MIGRATION: dict[str, str] = {
    "basics.generative_framing": "basics.recsys",
    "basics.pointwise_attention": "core.attention.hstu_attention",
    "basics.jagged_layout": "core.jagged.offsets",
    "basics.leave_one_out": "basics.sequence_modeling.leave_one_out",
    "basics.relative_bias": "core.attention.time_bucket",
    "core.softmax_attention": "core.attention.softmax_attention",
    "core.hstu_attention": "core.attention.hstu_attention",
    "core.time_bucket": "core.attention.time_bucket",
    "core.stu_forward": "core.hstu.stu_forward",
    "core.jagged_to_padded": "core.jagged.jagged_to_padded",
    "core.jagged_attention": "core.jagged.jagged_attention",
    "practical.user_sequences": "basics.sequence_modeling.user_sequences",
    "practical.split": "basics.sequence_modeling.leave_one_out",
    "practical.sampled_softmax": "core.sampled_softmax.loss",
    "practical.metrics": "practice.analysis.metrics",
    "practical.read_new_format": "beyond.read_new_format",
    "practical.train_model": "practice.train_script",
    "advanced.triton_jagged": "advanced.performance.triton_jagged",
    "advanced.triton_hstu_forward": "advanced.performance.triton_forward",
    "advanced.performance": "advanced.performance",
    "advanced.new_dataset": "advanced.new_dataset",
}

_BY_ID: dict[str, Item | Step] = {}
for _it in ITEMS:
    _BY_ID[_it.id] = _it
    for _st in _it.steps:
        _BY_ID[_st.id] = _st


def all_ids() -> list[str]:
    """Every item and step id, in display order."""
    return list(_BY_ID)


def resolve(some_id: str) -> str:
    """An item or step id, or an id of the earlier checklist (mapped by `MIGRATION`) -> today's id."""
    if some_id in _BY_ID:
        return some_id
    if some_id in MIGRATION:
        return MIGRATION[some_id]
    raise KeyError(
        f"unknown checklist id {some_id!r}: the items are {[it.id for it in ITEMS]} (steps: "
        "`<item id>.<step>`, listed by hstu_tutorial.progress.all_ids())"
    )


def item(some_id: str) -> Item | Step:
    """Look an item or step up by id (ids of the earlier checklist are mapped), with a message listing ids."""
    return _BY_ID[resolve(some_id)]


def parent(step_id: str) -> Item:
    """The item a step belongs to."""
    return _BY_ID[step_id.rsplit(".", 1)[0]]


def items_for_check(check_name: str) -> list[Item | Step]:
    """The items and steps that passing `check_name` ticks."""
    return [x for x in _BY_ID.values() if getattr(x, "check", None) == check_name]


def group_items(group: str) -> list[Item]:
    return [it for it in ITEMS if it.group == group]
