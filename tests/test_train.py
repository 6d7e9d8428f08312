"""The trainer: configs and their errors, the padded layout, learning, resume and the results files."""

import json
import os
import signal

import pytest
import torch

from hstu_tutorial.train import (
    ConfigError,
    ResidentSplit,
    TrainConfig,
    Trainer,
    build_model,
    list_configs,
    load_config,
    main,
    train,
)

torch.set_num_threads(2)

FAST = dict(
    max_seq_len=20,
    embedding_dim=32,
    dqk=32,
    dv=32,
    ffn_hidden=32,
    num_negatives=32,
    batch_size=32,
    eval_batch_size=512,
    tensorboard=False,
    progress=False,
    device="cpu",
)


# ---- configs ------------------------------------------------------------------------------------------


def test_bundled_configs_load_and_follow_the_reference_recipe():
    names = list_configs()
    for name in (
        "ml-1m/hstu-sampled-softmax-n128-final",
        "ml-1m/hstu-sampled-softmax-n128-large-final",
        "ml-1m/sasrec-sampled-softmax-n128-final",
        "ml-100k/hstu-sampled-softmax-n128-final",
        "synthetic/hstu-small",
        "synthetic/sasrec-small",
    ):
        assert name in names
    for name in names:
        cfg = load_config(name)
        assert cfg.name == name.split("/")[1]
        if name.startswith(("ml-1m/", "ml-100k/")):
            assert (cfg.learning_rate, cfg.betas, cfg.weight_decay) == (1e-3, [0.9, 0.98], 0.0)
            assert (cfg.batch_size, cfg.num_epochs, cfg.dropout, cfg.max_seq_len) == (128, 101, 0.2, 200)
            assert (cfg.loss, cfg.num_negatives, cfg.temperature) == ("sampled_softmax", 128, 0.05)
            assert cfg.protocol == "reference" and cfg.early_stopping_patience == 0
            assert cfg.stable_sort is False  # the reference's order of same-second ratings
    large = load_config("ml-1m/hstu-sampled-softmax-n128-large-final")
    assert (large.num_blocks, large.num_heads, large.dqk, large.dv) == (8, 2, 25, 25)


def test_overrides_are_typed():
    cfg = load_config(
        "synthetic/hstu-small",
        ["num_epochs=7", "bf16=true", "learning_rate=2e-3", "eval_ks=[5, 20]", "selection_metric=hr@20"],
    )
    assert (cfg.num_epochs, cfg.bf16, cfg.learning_rate, cfg.eval_ks) == (7, True, 2e-3, [5, 20])


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["num_epoch=3"], "unknown key 'num_epoch'.*Did you mean num_epochs.*Valid keys: name, "),
        (["num_epochs=three"], "num_epochs must be an integer"),
        (["model=gru"], "model = 'gru' is not one of"),
        (["dropout=1.5"], "dropout must be in"),
        (["learning_rate=0"], "learning_rate must be > 0"),
        (["bf16=maybe"], "bf16 must be true or false"),
        (["betas=[0.9]"], "betas must be two numbers"),
        (["batch_size=30", "grad_accum_steps=4"], "multiple of grad_accum_steps"),
        (["selection_metric=auc"], "selection_metric = 'auc' is not one of"),
        (["num_epochs"], "--set expects key=value"),
        (["attention_impl=sdpa"], "model = 'hstu' takes attention_impl in"),
    ],
)
def test_bad_configs_are_explained(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config("synthetic/hstu-small", overrides)


def test_bad_files_are_explained(tmp_path, capsys):
    with pytest.raises(ConfigError, match="ml-1m/hstu-nope.*hstu-train --list"):
        load_config("ml-1m/hstu-nope")
    bad = tmp_path / "bad.toml"
    bad.write_text("num_epochs = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    bad.write_text("[model]\nnum_blocks = 2\n")
    with pytest.raises(ConfigError, match="tables such as \\[model\\]"):
        load_config(bad)
    bad.write_text("lr = 0.1\n")
    with pytest.raises(ConfigError, match="unknown key 'lr'"):
        load_config(bad)
    assert main(["--config", str(bad)]) == 2
    assert "error: unknown key 'lr'" in capsys.readouterr().err
    assert main(["--list"]) == 0


def test_sasrec_attention_impl_choices():
    """SASRec takes sdpa, sdpa-bf16 and pytorch; "auto" is sdpa on a CPU (sdpa-bf16 on CUDA)."""
    for impl in ("sdpa", "sdpa-bf16", "pytorch"):
        cfg = TrainConfig(model="sasrec", **{**FAST, "attention_impl": impl}).validate()
        model, got = build_model(cfg, 30, torch.device("cpu"))
        assert got == impl and {b.attention_impl for b in model.blocks} == {impl}
    _, got = build_model(TrainConfig(model="sasrec", **FAST).validate(), 30, torch.device("cpu"))
    assert got == "sdpa"
    with pytest.raises(ConfigError, match="sdpa-bf16"):
        TrainConfig(model="sasrec", **{**FAST, "attention_impl": "sdpa_bf16"}).validate()


# ---- the padded layout gives the jagged layout's outputs --------------------------------------------


@pytest.mark.parametrize("model_name", ["hstu", "sasrec"])
def test_padded_layout_matches_jagged_layout(dataset, model_name):
    cfg = TrainConfig(model=model_name, **{**FAST, "dropout": 0.0}).validate()
    torch.manual_seed(0)
    model, _ = build_model(cfg, dataset.num_items, torch.device("cpu"))
    model.eval()
    rs = ResidentSplit(dataset.train, torch.device("cpu"))
    index = torch.tensor([3, 0, 17, 5, 40, rs.num_users])  # includes the empty filler row
    real = index[:-1]
    jb = rs.jagged_batch(real, int(rs.lengths[real].sum()))
    pb = rs.padded_batch(index)
    plast, jlast = rs.padded_last(index), jb.offsets[1:] - 1  # (B,) each history's last real token
    with torch.no_grad():
        jout, pout = model(jb), model(pb)  # (T, D), (B*N, D)
    mask = pb.next_item_ids != 0  # real, supervised positions of the padded layout
    torch.testing.assert_close(pout[mask], jout, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(pb.next_item_ids[mask], jb.next_item_ids)
    torch.testing.assert_close(pout[plast[:-1]], jout[jlast], rtol=1e-5, atol=1e-5)
    assert int(mask.sum()) == int(rs.lengths[real].sum())  # filler row: no supervised position


# ---- learning, resume, results -------------------------------------------------------------------------


def test_short_run_beats_popularity_and_writes_results(dataset, tmp_path):
    from hstu_tutorial.metrics import popularity_baseline

    seen = []
    res = train(
        "synthetic/hstu-small",
        dataset=dataset,
        verbose=False,
        callback=seen.append,
        num_epochs=4,
        learning_rate=3e-3,
        exp_dir=str(tmp_path),
        **FAST,
    )
    pop = popularity_baseline(dataset, "test", ks=(10,))
    model_hr = res["best_by_valid"]["test"]["hr@10"]
    assert model_hr > 2 * pop["hr@10"] and model_hr > pop["hr@10"] + 0.1, (model_hr, pop)
    assert [r["epoch"] for r in seen] == [0, 1, 2, 3] and seen[0]["loss"] > seen[-1]["loss"]
    run = res["trainer"].run_dir
    on_disk = json.loads((run / "results.json").read_text())
    assert on_disk["reference_protocol"]["epochs"] == [0, 3]
    assert set(on_disk["best_by_valid"]) >= {"epoch", "valid", "test", "metric"}
    assert "best by validation" in (run / "results.md").read_text()
    best = torch.load(run / "ckpt_best.pt", weights_only=True)
    assert best["epoch"] == on_disk["best_by_valid"]["epoch"]
    trainer = res["trainer"]
    assert trainer.load_weights() == best["epoch"]
    again = trainer.evaluate(("test",))["test"]
    assert again["hr@10"] == pytest.approx(res["best_by_valid"]["test"]["hr@10"])


def _params(trainer):
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


def test_resume_after_interruption_is_bit_identical(dataset, tmp_path):
    common = dict(dataset=dataset, verbose=False, num_epochs=2, timestamp_run_dir=False, **FAST)
    straight = train("synthetic/hstu-small", exp_dir=str(tmp_path / "a"), **common)
    # Stop in the middle of epoch 0 (as max_steps does), resume, stop again by Ctrl-C after epoch 0's
    # evaluation, resume again and finish.
    first = train("synthetic/hstu-small", exp_dir=str(tmp_path / "b"), max_steps=5, **common)
    assert first["status"] == "stopped"
    ckpt = first["trainer"].run_dir / "ckpt_last.pt"

    def ctrl_c(record):
        os.kill(os.getpid(), signal.SIGINT)

    second = train(
        "synthetic/hstu-small", exp_dir=str(tmp_path / "b"), resume=str(ckpt), callback=ctrl_c, **common
    )
    assert second["status"] == "interrupted" and second["epochs_run"] == 1
    third = train("synthetic/hstu-small", exp_dir=str(tmp_path / "b"), resume=str(ckpt), **common)
    assert third["status"] == "completed" and third["epochs_run"] == 2
    a, b = _params(straight["trainer"]), _params(third["trainer"])
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [h["test"] for h in straight["history"]] == [h["test"] for h in third["history"]]
    assert [h["loss"] for h in straight["history"]] == [h["loss"] for h in third["history"]]


def test_same_seed_same_run_and_grad_accumulation_matches(dataset, tmp_path):
    common = dict(
        dataset=dataset,
        verbose=False,
        num_epochs=1,
        exp_dir=str(tmp_path),
        save_checkpoints=False,
        **{**FAST, "dropout": 0.0},
    )
    r1 = train("synthetic/sasrec-small", **common)
    r2 = train("synthetic/sasrec-small", **common)
    assert r1["history"][0]["loss"] == r2["history"][0]["loss"]
    # Two micro-batches of 16 give the batch-32 gradient (up to float rounding): the same first step.
    t1 = Trainer(
        load_config("synthetic/sasrec-small", num_epochs=1, **common_keys(common)), dataset, verbose=False
    )
    t2 = Trainer(
        load_config("synthetic/sasrec-small", num_epochs=1, grad_accum_steps=2, **common_keys(common)),
        dataset,
        verbose=False,
    )
    index = torch.arange(32)
    totals = t1.splits["train"].batch_totals(index, 32)
    totals2 = t2.splits["train"].batch_totals(index, 16)
    torch.manual_seed(0)
    t1.optimizer.zero_grad()
    loss1 = t1.loss(t1.train_batch(index, totals[0]))
    loss1.backward()
    torch.manual_seed(0)
    loss2 = t2.step(index, totals2)
    assert loss2.item() == pytest.approx(loss1.item(), rel=0.05)  # different negatives per micro-batch


def common_keys(common):
    return {k: v for k, v in common.items() if k not in ("dataset", "verbose", "num_epochs")}


def test_recompute_gives_the_same_gradients(dataset, tmp_path):
    grads = []
    for recompute in (False, True):
        common = dict(num_epochs=1, exp_dir=str(tmp_path), recompute=recompute, **FAST)
        tr = Trainer(load_config("synthetic/hstu-small", **common), dataset, verbose=False)
        index = torch.arange(32)
        torch.manual_seed(3)
        loss = tr.loss(tr.train_batch(index))
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in tr.model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], msg=name)


def test_autotune_key_sets_the_kernel_options_while_the_trainer_runs(dataset, tmp_path):
    from hstu_tutorial.ops.options import get_options

    before = get_options()
    for flag in (False, True):
        cfg = load_config("synthetic/hstu-small", dict(FAST, exp_dir=str(tmp_path), autotune=flag))
        tr = Trainer(cfg, dataset, verbose=False)
        seen = []
        tr.model.register_forward_pre_hook(lambda _m, _a, seen=seen: seen.append(get_options().autotune))
        tr.step(torch.arange(32))
        tr.ranks("valid")
        assert seen and all(s is flag for s in seen), seen  # in force in the step and the evaluation
        assert get_options() == before  # scoped: nothing left behind
    with pytest.raises(ConfigError, match="autotune must be true or false"):
        load_config("synthetic/hstu-small", ["autotune=sometimes"])
