"""perf.trainer_runs.lever_dataset: which data the lever benchmarks run on, by preset and by what is on disk."""

import hstu_tutorial.data as data
from hstu_tutorial.perf import trainer_runs
from hstu_tutorial.presets import PRESETS


def _calls(monkeypatch, tmp_path):
    calls = []

    def fake(name, max_seq_len, **kw):
        calls.append((name, max_seq_len, kw))
        return f"dataset {name}"

    monkeypatch.setattr(data, "get_reco_dataset", fake)
    monkeypatch.setenv("HSTU_DATA_DIR", str(tmp_path))
    return calls


def test_full_preset_takes_users_1_2999_only_when_all_three_files_are_there(monkeypatch, tmp_path):
    calls = _calls(monkeypatch, tmp_path)
    folder = tmp_path / "ml-1m-u2999"
    folder.mkdir()
    (folder / "ratings.dat").write_text("1::1::5::978300760\n")  # one file of three: not ML-1M
    ds, label, keys = trainer_runs.lever_dataset(PRESETS["full"])
    assert calls[-1][0] == "synthetic" and keys == {"dataset": "synthetic", "synthetic_size": "ml-1m"}
    for name in ("movies.dat", "users.dat"):
        (folder / name).write_text("")
    (tmp_path / "ml-1m").mkdir()  # all users: not what the published lever tables were measured on
    ds, label, keys = trainer_runs.lever_dataset(PRESETS["full"])
    assert calls[-1][:2] == ("ml-1m", 200) and calls[-1][2]["data_dir"] == folder
    assert keys == {"dataset": "ml-1m", "data_dir": str(folder)} and "2999" in label


def test_small_preset_runs_on_the_ci_synthetic_set(monkeypatch, tmp_path):
    calls = _calls(monkeypatch, tmp_path)
    ds, label, keys = trainer_runs.lever_dataset(PRESETS["small"])
    assert (
        calls[-1][0] == "synthetic"
        and calls[-1][2]["synthetic_size"] == "ci"
        and keys == {"dataset": "synthetic"}
    )
