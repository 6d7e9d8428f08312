"""The experiment record is filled from a run's results: every field, both protocols, clear errors."""

import json

import pytest
import torch

from hstu_tutorial.training.experiment import RecordError, experiment_record, record_markdown, save_record

torch.set_num_threads(2)


def _results(protocol="validation", device="NVIDIA H200"):
    cfg = {
        "name": "hstu-x",
        "description": "a test run",
        "dataset": "ml-1m",
        "data_dir": "data/ml-1m-u2999",
        "protocol": protocol,
        "model": "hstu",
        "embedding_dim": 50,
        "num_blocks": 2,
        "num_heads": 1,
        "dqk": 50,
        "dv": 50,
        "ffn_hidden": 50,
        "dropout": 0.2,
        "max_seq_len": 200,
        "loss": "sampled_softmax",
        "num_negatives": 128,
        "temperature": 0.05,
        "batch_size": 128,
        "grad_accum_steps": 1,
        "num_epochs": 101,
        "learning_rate": 1e-3,
        "betas": [0.9, 0.98],
        "weight_decay": 0.0,
        "seed": 42,
        "attention_impl": "triton",
        "tf32": True,
        "bf16": False,
        "compile": False,
        "cuda_graphs": "auto",
        "layout": "auto",
        "recompute": False,
        "eval_ks": [1, 10, 50, 200],
    }
    best_test = {"hr@10": 0.31, "ndcg@10": 0.17, "mrr": 0.14}
    mean_test = {"hr@10": 0.29, "ndcg@10": 0.16, "mrr": 0.13}
    return {
        "name": "hstu-x",
        "description": "a test run",
        "status": "completed",
        "config": cfg,
        "dataset": {"dataset": "ml-1m", "users": 2999, "rated_items": 3600, "interactions": 500_000},
        "device": device,
        "torch": "2.11.0",
        "attention_impl": "triton",
        "epochs_run": 101,
        "run_dir": None,
        "reference_protocol": {
            "epochs": [91, 100],
            "test_mean": mean_test,
            "final_epoch": 100,
            "test_final": mean_test,
        },
        "best_by_valid": {"metric": "ndcg@10", "epoch": 57, "valid": best_test, "test": best_test},
        "timing": {
            "setup_s": 3.0,
            "train_s": 12.5,
            "eval_s": 4.0,
            "train_eval_s": 16.5,
            "s_per_epoch": 0.163,
            "train_tokens_per_s": 3.4e6,
            "peak_mem_gib": 1.2,
        },
        "history": [],
    }


def test_record_fields_come_from_the_results():
    res = _results()
    rec = experiment_record(res, date="2026-11-28 18:00 UTC", notes="n")
    assert rec["date"] == "2026-11-28 18:00 UTC"
    assert rec["dataset"]["name"] == "ml-1m" and rec["dataset"]["data_dir"] == "data/ml-1m-u2999"
    assert rec["dataset"]["users"] == 2999 and rec["dataset"]["protocol"] == "validation"
    assert rec["config"] == res["config"]  # the full config: enough to rerun
    assert rec["hyperparameters"]["learning_rate"] == 1e-3 and rec["hyperparameters"]["num_blocks"] == 2
    assert "tf32" not in rec["hyperparameters"] and rec["speed_settings"]["tf32"] is True
    # validation protocol: the honest number, test at the best validation epoch
    assert (rec["hr@10"], rec["ndcg@10"]) == (0.31, 0.17)
    assert "best validation ndcg@10 (epoch 57)" in rec["metrics_source"]
    assert rec["training_time_s"] == 12.5 and rec["peak_mem_gib"] == 1.2
    assert rec["gpu"] == "NVIDIA H200" and rec["device"] == "NVIDIA H200"
    md = record_markdown(rec)
    for text in (
        "| HR@10 | 0.3100 |",
        "| NDCG@10 | 0.1700 |",
        "2026-11-28 18:00 UTC",
        "NVIDIA H200",
        "12.5 s train",
        "learning_rate=0.001",
        "peak GPU memory | 1.20 GiB",
    ):
        assert text in md


def test_reference_protocol_reports_the_mean_of_the_last_epochs_and_cpu_has_no_gpu():
    rec = experiment_record(_results(protocol="reference", device="cpu (2 threads)"))
    assert (rec["hr@10"], rec["ndcg@10"]) == (0.29, 0.16)
    assert "mean of epochs 91-100" in rec["metrics_source"]
    assert rec["gpu"] is None


def test_missing_pieces_are_explained():
    res = _results()
    del res["timing"]
    with pytest.raises(RecordError, match="no 'timing'"):
        experiment_record(res)
    res = _results()
    res["best_by_valid"], res["reference_protocol"] = {}, {}
    with pytest.raises(RecordError, match="no test metrics"):
        experiment_record(res)


def test_a_real_run_fills_the_record(tmp_path):
    from hstu_tutorial.data import get_reco_dataset
    from hstu_tutorial.train import train

    ds = get_reco_dataset(
        "synthetic", max_seq_len=20, data_dir=tmp_path / "data", protocol="validation", verbose=False
    )
    res = train(
        "synthetic/hstu-small",
        dataset=ds,
        verbose=False,
        max_seq_len=20,
        embedding_dim=16,
        dqk=16,
        dv=16,
        num_negatives=16,
        num_epochs=1,
        tensorboard=False,
        progress=False,
        device="cpu",
        save_checkpoints=False,
        exp_dir=str(tmp_path / "exps"),
    )
    rec = save_record(res, tmp_path / "rec")
    saved = json.loads((tmp_path / "rec" / "experiment.json").read_text())
    assert saved["hr@10"] == pytest.approx(rec["hr@10"])
    assert 0.0 <= rec["hr@10"] <= 1.0 and 0.0 <= rec["ndcg@10"] <= rec["hr@10"]
    assert rec["hr@10"] == pytest.approx(res["best_by_valid"]["test"]["hr@10"])
    assert rec["hyperparameters"]["embedding_dim"] == 16 and rec["epochs_run"] == 1
    assert rec["training_time_s"] > 0 and rec["device"].startswith("cpu")
    assert (tmp_path / "rec" / "experiment.md").read_text().startswith("## Experiment: hstu-small")
