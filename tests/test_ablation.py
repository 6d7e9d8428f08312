"""HSTU's ablation switches (each changes the forward as its formula says, defaults unchanged) and the
exercise-09 check `check_ablation` against real trainer runs, with the wrong solutions it must name."""

import copy

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from hstu_tutorial import checks, progress
from hstu_tutorial.checks import ablation as ab
from hstu_tutorial.errors import ConfigError
from hstu_tutorial.modules import JaggedLayout, STULayer, hstu_encoder
from hstu_tutorial.modules.stu import SWITCH_DEFAULTS, triton_supports
from hstu_tutorial.ops.hstu_attention import padded_hstu_attention
from hstu_tutorial.ops.layer_norm import layer_norm
from hstu_tutorial.perf import random_jagged_batch
from hstu_tutorial.train import TrainConfig, build_model, config_from_dict, load_config, train
from hstu_tutorial.training.config import ABLATION_DEFAULTS

DT = torch.float64
D, H, DQK, DV, N = 8, 2, 4, 3, 6


def _layer(seed=0, **switches):
    torch.manual_seed(seed)
    return STULayer(D, H, DQK, DV, dropout=0.0, norm=7.0, num_positions=N, **switches).to(DT).eval()


def _inputs(seed=0):
    batch = random_jagged_batch([3, 1, 6], N, 30, seed=seed, wide_time_gaps=True)
    x = torch.randn(batch.item_ids.shape[0], D, dtype=DT, generator=torch.Generator().manual_seed(seed))
    return x, batch


def _layout(layer, batch):
    return JaggedLayout.from_batch(
        batch, N, rab=layer.rab if layer.rab is not None and layer.rab.use_time else None
    )


def _load_from(target: STULayer, source: STULayer) -> STULayer:
    """Copy the shared weights of `source` into `target` (u's columns dropped without the gate)."""
    state = {k: v for k, v in source.state_dict().items() if k in target.state_dict()}
    if not target.use_gate:
        state["uvqk"] = source.uvqk.detach()[:, H * DV :]
    target.load_state_dict(state)
    return target


# ---- the switches in the model ------------------------------------------------------------------------------


def test_defaults_are_the_layer_as_before():
    """Default switches: the same parameters, the same draws from the seed, and the forward bit for bit."""
    layer = _layer()
    assert layer.switches() == SWITCH_DEFAULTS == ABLATION_DEFAULTS == ab.SWITCH_DEFAULTS
    shapes = {k: tuple(v.shape) for k, v in layer.state_dict().items()}
    assert shapes == {"uvqk": (D, 2 * H * (DV + DQK)), "o.weight": (D, H * DV), "o.bias": (D,),
                      "rab.pos_w": (2 * N - 1,), "rab.ts_w": (129,)}  # fmt: skip
    torch.manual_seed(0)  # the draws in the order of the layer before the switches existed
    uvqk = torch.empty(D, 2 * H * (DV + DQK)).normal_(0.0, 0.02)
    assert torch.equal(layer.uvqk.float(), uvqk)
    x, batch = _inputs()
    layout = _layout(layer, batch)
    # the forward as written before the switches: one code path, u * LayerNorm(A v)
    x_n = layer_norm(x, eps=1e-6)
    u, v, q, k = torch.split(F.silu(x_n @ layer.uvqk), [H * DV, H * DV, H * DQK, H * DQK], dim=-1)
    B = layout.batch_size
    vqk = layout.pad(torch.cat([v, q, k], dim=-1))
    vp, qp, kp = torch.split(vqk, [H * DV, H * DQK, H * DQK], dim=-1)
    rab = layer.rab.from_buckets(layout.buckets)
    out = padded_hstu_attention(qp.reshape(B, N, H, DQK), kp.reshape(B, N, H, DQK), vp.reshape(B, N, H, DV),
                                layout.lengths, rab=rab, norm=7.0, causal=True)  # fmt: skip
    av = layout.unpad(out.reshape(B, N, H * DV))
    want = x + layer.o(u * layer_norm(av, eps=1e-6))
    assert torch.equal(layer(x, layout), want)
    assert "use_" not in layer.extra_repr() and hstu_encoder(10).extra_repr() == ""


@pytest.mark.parametrize("switch,zeroed", [("use_pos_bias", "pos_w"), ("use_time_bias", "ts_w")])
def test_without_a_bias_term_equals_that_term_zero(switch, zeroed):
    full = _layer(seed=1)
    with torch.no_grad():
        getattr(full.rab, zeroed).zero_()
    ablated = _load_from(_layer(seed=2, **{switch: False}), full)
    assert getattr(ablated.rab, zeroed) is None and f"{switch}=False" in ablated.extra_repr()
    x, batch = _inputs(1)
    want = full(x, JaggedLayout.from_batch(batch, N, rab=full.rab))
    got = ablated(x, _layout(ablated, batch))
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    # and the term does matter: with it back, the output moves
    other = _layer(seed=1)
    assert not torch.allclose(other(x, JaggedLayout.from_batch(batch, N, rab=other.rab)), got)


def test_both_bias_terms_off_is_no_bias():
    layer = _layer(use_pos_bias=False, use_time_bias=False)
    assert layer.rab is None and layer.switches()["use_pos_bias"] is False


def test_without_gate_is_layer_norm_of_av():
    gated = _layer(seed=3)
    plain = _load_from(_layer(seed=4, use_gate=False), gated)
    assert plain.uvqk.shape == (D, H * DV + 2 * H * DQK)
    x, batch = _inputs(2)
    layout = JaggedLayout.from_batch(batch, N, rab=gated.rab)
    u, v, q, k = gated.split_uvqk(x)
    av, _ = gated.attention(q, k, v, layout)
    want = x + gated.o(layer_norm(av, eps=1e-6))  # no u
    torch.testing.assert_close(plain(x, layout), want, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(gated(x, layout), want)


def test_softmax_rows_sum_to_one_over_the_causal_window():
    layer = _layer(seed=5, attention_activation="softmax")
    x, batch = _inputs(3)
    layout = JaggedLayout.from_batch(batch, N, rab=layer.rab)
    out, A = layer(x, layout, return_attention=True)  # (B, H, N, N)
    lengths = layout.lengths
    for b, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(A[b, :, :n].sum(-1), torch.ones(H, n, dtype=DT))
        assert bool((A[b, :, :n].triu(1) == 0).all()) and bool((A[b, :, n:] == 0).all())
    # the formula: softmax_j<=i of (q k + rab) / sqrt(dqk), no n
    u, v, q, k = layer.split_uvqk(x)
    qp, kp = layout.pad(q).view(-1, N, H, DQK), layout.pad(k).view(-1, N, H, DQK)
    scores = (
        torch.einsum("bihd,bjhd->bhij", qp, kp) + layer.rab.from_buckets(layout.buckets)[:, None]
    ) / DQK**0.5
    causal = torch.ones(N, N, dtype=torch.bool).tril()
    for b, n in enumerate(lengths.tolist()):
        s = scores[b, :, :n, :n].masked_fill(~causal[:n, :n], float("-inf"))
        torch.testing.assert_close(A[b, :, :n, :n], torch.softmax(s, -1))
    assert out.shape == x.shape


def test_encoder_switches_and_repr():
    enc = hstu_encoder(20, max_seq_len=10, use_time_bias=False, attention_activation="softmax")
    assert enc.switches() == {**SWITCH_DEFAULTS, "use_time_bias": False, "attention_activation": "softmax"}
    assert enc.extra_repr() == "use_time_bias=False, attention_activation='softmax'"
    assert "rab ts_w" not in enc.parameter_breakdown() and "rab pos_w" in enc.parameter_breakdown()
    batch = random_jagged_batch([4, 2], 10, 20, seed=0)
    out, maps = enc.eval()(batch, return_attention=True)
    assert out.shape == (6, 50) and maps[0].shape == (2, 1, 10, 10)


def test_triton_covers_silu_with_full_bias_or_none():
    assert triton_supports(True, True, "silu") and triton_supports(False, False, "silu")
    assert not triton_supports(False, True, "silu") and not triton_supports(True, True, "softmax")
    with pytest.raises(ValueError, match="attention_impl='pytorch'"):
        STULayer(D, H, DQK, DV, attention_impl="triton", use_pos_bias=False)
    with pytest.raises(
        ConfigError, match="attention_impl = 'triton'.*use_gate|attention_activation = 'softmax'"
    ):
        load_config("synthetic/hstu-small", attention_impl="triton", attention_activation="softmax")
    load_config(
        "synthetic/hstu-small", attention_impl="triton", use_gate=False
    )  # the gate is outside the kernel


def test_config_keys_validated_for_learners():
    cfg = load_config("synthetic/hstu-small", ["use_gate=false", "attention_activation=softmax"])
    assert cfg.use_gate is False and cfg.attention_activation == "softmax"
    with pytest.raises(ConfigError, match="did you mean 'softmax'"):
        load_config("synthetic/hstu-small", attention_activation="softmaxx")
    with pytest.raises(ConfigError, match="model = 'sasrec'"):
        load_config("synthetic/sasrec-small", use_pos_bias=False)
    with pytest.raises(ConfigError, match="true or false"):
        load_config("synthetic/hstu-small", use_gate="maybe")
    # a config saved before the switches existed (an old checkpoint's) reads with the defaults
    old = {k: v for k, v in TrainConfig().to_dict().items() if k not in ABLATION_DEFAULTS}
    restored = config_from_dict(old).validate()
    assert {k: getattr(restored, k) for k in ABLATION_DEFAULTS} == ABLATION_DEFAULTS
    model, impl = build_model(load_config("synthetic/hstu-small", use_gate=False), 30, torch.device("cpu"))
    assert impl == "pytorch" and model.switches()["use_gate"] is False


# ---- check_ablation on real runs ----------------------------------------------------------------------------

RUN = dict(num_epochs=1, seed=3, protocol="validation", tensorboard=False, save_checkpoints=False,
           progress=False, verbose=False)  # fmt: skip


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    from hstu_tutorial.data import get_reco_dataset

    data = get_reco_dataset("synthetic", max_seq_len=50, protocol="validation", verbose=False)
    exp = str(tmp_path_factory.mktemp("abl"))

    def run(**kw):
        return train("synthetic/hstu-small", dataset=data, exp_dir=exp, **{**RUN, **kw})

    runs = {name: run(**ab.VARIANTS[name]) for name in ab.VARIANTS}
    extra = {
        "seed": run(use_gate=False, seed=4),
        "epochs": run(use_gate=False, num_epochs=2),
        "two": run(use_gate=False, use_pos_bias=False),
    }
    return runs, extra


def _report(runs, table=ab.reference_table, overrides=ab.reference_overrides):
    ok = checks.check_ablation(runs, table, overrides)
    return ok, checks.last_report


def test_the_right_study_passes_and_ticks(study, monkeypatch, tmp_path):
    monkeypatch.setenv("HSTU_PROGRESS_FILE", str(tmp_path / "p.json"))
    runs, _ = study
    ok, text = _report(runs)
    assert ok, text
    assert "advanced.modify_arch" in text and progress.items_for_check("check_ablation")
    # a learner's table with a "variant" column, and rounding only when printing, pass too
    ok, text = _report(runs, lambda r: ab.reference_table(r).rename_axis("variant").reset_index())
    assert ok, text


def test_stubs_are_not_attempted(study):
    runs, _ = study

    def stub(*_):
        raise NotImplementedError

    assert not _report(runs, stub)[0] and "not attempted yet" in checks.last_report
    assert not _report(runs, overrides=stub)[0] and "not attempted yet" in checks.last_report


def _plain(runs):
    """The runs without their Trainer (no re-evaluation: faster, for the checks that fail before it)."""
    return {name: {k: v for k, v in run.items() if k != "trainer"} for name, run in runs.items()}


def _with(runs, name, run):
    out = dict(runs)
    out[name] = run
    return out


WRONG_OVERRIDES = {
    "two switches at once": (
        lambda n: {"no_gate": {"use_gate": False, "use_pos_bias": False}}.get(n, ab.VARIANTS[n]),
        "2 switches at once",
    ),
    "a seed in a variant": (lambda n: {**ab.VARIANTS[n], **({"seed": 7} if n == "softmax" else {})}, "seed"),
    "a budget in a variant": (
        lambda n: {**ab.VARIANTS[n], **({"num_epochs": 3} if n == "no_gate" else {})},
        "training budget",
    ),
    "the wrong switch": (
        lambda n: {"no_pos_bias": {"use_time_bias": False}}.get(n, ab.VARIANTS[n]),
        "use_pos_bias",
    ),
    "softmax misspelt": (
        lambda n: {"softmax": {"attention_activation": "sofmax"}}.get(n, ab.VARIANTS[n]),
        "refuses",
    ),
}


@pytest.mark.parametrize("slip", list(WRONG_OVERRIDES))
def test_wrong_overrides_are_named(study, slip):
    fn, words = WRONG_OVERRIDES[slip]
    ok, text = _report(_plain(study[0]), overrides=fn)
    assert not ok and words in text, text


@pytest.mark.parametrize(
    "slip,words",
    [("two", "2 switches at once"), ("seed", "seed"), ("epochs", "training budget")],
)
def test_wrong_runs_are_named(study, slip, words):
    runs, extra = study
    ok, text = _report(_with(_plain(runs), "no_gate", extra[slip]), overrides=None)
    assert not ok and words in text, text


def test_missing_variant_and_fake_runs(study):
    runs, _ = study
    partial = {k: v for k, v in runs.items() if k != "no_time_bias"}
    assert not _report(partial)[0] and "no run for ['no_time_bias']" in checks.last_report
    typed = _with(runs, "softmax", {"best_by_valid": {"test": {"hr@10": 0.5, "ndcg@10": 0.3}}})
    assert not _report(typed)[0] and "not what train() returns" in checks.last_report
    edited = copy.deepcopy(_plain(runs)["no_gate"])
    edited["best_by_valid"]["test"] = {**edited["best_by_valid"]["test"], "ndcg@10": 0.9}
    assert not _report(_with(runs, "no_gate", edited))[0] and "edited by hand" in checks.last_report
    # history and best edited together: the run's own model, evaluated again, gives it away
    edited = {**copy.deepcopy(_plain(runs)["no_gate"]), "trainer": runs["no_gate"]["trainer"]}
    edited["history"][-1]["test"]["hr@10"] += 0.05  # best_by_valid holds the same record
    assert not _report(_with(runs, "no_gate", edited))[0] and "not this model's" in checks.last_report
    swapped = _with(runs, "default", runs["no_gate"])
    assert not _report(swapped, overrides=None)[0] and "'default' run sets" in checks.last_report


def test_softmax_that_still_divides_by_n(study):
    runs, _ = study
    model = runs["softmax"]["trainer"].model
    originals = [block.attention for block in model.blocks]
    try:
        for block, attention in zip(model.blocks, originals):

            def divided(q, k, v, layout, return_attention=False, _att=attention, _n=block.norm):
                out, A = _att(q, k, v, layout, return_attention)
                return out / _n, (None if A is None else A / _n)

            block.attention = divided
        ok, text = _report(runs)
    finally:
        for block in model.blocks:
            del block.attention
    assert not ok and "sum to 1/n" in text, text


def _table_with(column, fn):
    def make(runs):
        table = ab.reference_table(runs)
        table[column] = fn(table, runs)
        return table

    return make


WRONG_TABLES = {
    "sign flipped": (_table_with("ΔNDCG@10", lambda t, r: -t["ΔNDCG@10"]), "sign flipped"),
    "against the wrong row": (
        _table_with("ΔHR@10", lambda t, r: t["HR@10"] - t.loc["softmax", "HR@10"]),
        "against the row 'softmax'",
    ),
    "relative change": (
        _table_with("ΔNDCG@10", lambda t, r: t["ΔNDCG@10"] / t.loc["default", "NDCG@10"]),
        "relative change",
    ),
    "rounded by hand": (_table_with("NDCG@10", lambda t, r: t["NDCG@10"].round(2)), "unrounded"),
    "validation numbers": (
        _table_with("HR@10", lambda t, r: [r[v]["best_by_valid"]["valid"]["hr@10"] for v in t.index]),
        "validation number",
    ),
    "a missing column": (lambda runs: ab.reference_table(runs).drop(columns="train_s"), "lacks the columns"),
    "a missing row": (lambda runs: ab.reference_table(runs).drop(index="no_gate"), "no row for ['no_gate']"),
    "not a table": (lambda runs: {"default": 0.3}, "DataFrame"),
}


@pytest.mark.parametrize("slip", list(WRONG_TABLES))
def test_wrong_tables_are_named(study, slip):
    make, words = WRONG_TABLES[slip]
    ok, text = _report(_plain(study[0]), make)
    assert not ok and words in text, text


def test_a_table_dataframe_is_accepted(study):
    runs, _ = study
    assert _report(_plain(runs), ab.reference_table(runs))[0], checks.last_report
    assert isinstance(ab.reference_table(runs), pd.DataFrame)
