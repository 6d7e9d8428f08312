"""The learning checklist's storage: atomic writes, corruption recovery, migration of the earlier ids."""

from __future__ import annotations

import datetime as dt
import errno
import json
import os
import pathlib
import re
import types

import pytest
from tiny_runs import TINY_SETS, set_args

from hstu_tutorial import checks, progress
from hstu_tutorial.progress import store


@pytest.fixture()
def pfile(tmp_path, monkeypatch):
    path = tmp_path / "sub" / "progress.json"
    monkeypatch.setenv("HSTU_PROGRESS_FILE", str(path))
    return path


def _backups(pfile):
    return sorted(pfile.parent.glob(pfile.name + ".bak-*"))


def test_env_overrides_the_home_path(pfile):
    assert progress.progress_path() == pfile


def test_default_path_is_in_home(monkeypatch, tmp_path):
    monkeypatch.delenv("HSTU_PROGRESS_FILE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert progress.progress_path() == tmp_path / ".hstu_tutorial" / "progress.json"


def test_missing_file_is_an_empty_checklist(pfile):
    state = progress.load()
    assert state["items"] == {} and not pfile.exists()


def test_tick_round_trips_and_creates_the_folder(pfile):
    progress.tick("core.jagged.offsets", by="check_lengths_to_offsets")
    assert pfile.exists()
    saved = json.loads(pfile.read_text())
    assert saved["version"] == 2
    assert saved["items"]["core.jagged.offsets"] == {
        "done": True,
        "by": "check_lengths_to_offsets",
        "at": saved["items"]["core.jagged.offsets"]["at"],
    }
    assert progress.is_done("core.jagged.offsets")
    progress.reset()
    assert not progress.is_done("core.jagged.offsets")


def test_unknown_item_is_rejected_with_the_valid_ids(pfile):
    with pytest.raises(KeyError, match="unknown checklist id 'basics.nope'.*basics.recsys"):
        progress.tick("basics.nope", by="test")


@pytest.mark.parametrize("by", ["", "manual", "checkbox"])
def test_no_tick_by_hand(pfile, by):
    with pytest.raises(ValueError, match="evidence"):
        progress.tick("basics.recsys", by=by)
    assert not pfile.exists()


def test_atomic_write_leaves_the_old_file_when_writing_fails(pfile, monkeypatch):
    progress.tick("core.attention.time_bucket", by="test")
    before = pfile.read_text()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(store.json, "dump", boom)
    with pytest.raises(OSError, match="disk full"):
        progress.tick("core.hstu.stu_forward", by="test")
    assert pfile.read_text() == before  # the old file is intact
    assert [p.name for p in pfile.parent.iterdir()] == ["progress.json"]  # no temp file left behind


def test_save_goes_through_os_replace(pfile, monkeypatch):
    calls = []
    real = os.replace

    def spy(src, dst):
        calls.append((str(src), str(dst)))
        return real(src, dst)

    monkeypatch.setattr(store.os, "replace", spy)
    progress.tick("core.attention.time_bucket", by="test")
    assert calls and calls[-1][1] == str(pfile) and calls[-1][0] != str(pfile)


@pytest.mark.parametrize(
    "garbage",
    [
        b"{not json",
        b"\xff\xfe\x00",
        b"[1, 2]",
        b'{"version": 99, "items": {}}',
        b'{"version": 1, "items": {"a": {"done": "yes"}}}',
        b"",
    ],
)
def test_corrupted_file_is_reported_backed_up_and_rebuilt(pfile, garbage):
    pfile.parent.mkdir(parents=True)
    pfile.write_bytes(garbage)
    with pytest.warns(RuntimeWarning, match="could not be read"):
        state = progress.load()
    assert state["items"] == {}
    (backup,) = _backups(pfile)
    assert backup.read_bytes() == garbage
    assert json.loads(pfile.read_text())["items"] == {}  # rebuilt, readable again
    progress.tick("core.attention.time_bucket", by="test")  # and usable
    assert progress.is_done("core.attention.time_bucket")


def _corrupt(pfile, data: bytes) -> None:
    pfile.parent.mkdir(parents=True, exist_ok=True)
    pfile.write_bytes(data)
    with pytest.warns(RuntimeWarning, match="could not be read"):
        assert progress.load()["items"] == {}


def test_two_corruptions_leave_two_backups_with_their_own_contents(pfile):
    _corrupt(pfile, b"{first damage")
    progress.tick("core.attention.time_bucket", by="test")
    _corrupt(pfile, b"[second damage]")
    backups = _backups(pfile)
    assert len(backups) == 2
    assert {b.read_bytes() for b in backups} == {b"{first damage", b"[second damage]"}
    for b in backups:
        assert re.fullmatch(r"progress\.json\.bak-\d{8}T\d{6}Z-\d+", b.name), b.name


@pytest.mark.parametrize("hard_links", [True, False])
def test_a_backup_never_overwrites_an_existing_file(pfile, monkeypatch, hard_links):
    frozen = dt.datetime(2026, 11, 28, 18, 0, 0, tzinfo=dt.UTC)  # every backup gets the same time stamp
    monkeypatch.setattr(
        store,
        "_dt",
        types.SimpleNamespace(UTC=dt.UTC, datetime=types.SimpleNamespace(now=lambda tz=None: frozen)),
    )
    if not hard_links:  # a file system without hard links: the copy path

        def no_link(src, dst):
            raise OSError(errno.EPERM, "Operation not permitted")

        monkeypatch.setattr(store.os, "link", no_link)
    pfile.parent.mkdir(parents=True)
    taken = pfile.with_name("progress.json.bak-20261128T180000Z-0")
    taken.write_bytes(b"someone else's file")
    _corrupt(pfile, b"one")
    _corrupt(pfile, b"two")
    assert taken.read_bytes() == b"someone else's file"
    assert [(b.name, b.read_bytes()) for b in _backups(pfile)] == [
        ("progress.json.bak-20261128T180000Z-0", b"someone else's file"),
        ("progress.json.bak-20261128T180000Z-1", b"one"),
        ("progress.json.bak-20261128T180000Z-2", b"two"),
    ]


def test_an_interrupted_write_leaves_no_partial_file(pfile, monkeypatch):
    progress.tick("core.attention.time_bucket", by="test")
    before = pfile.read_bytes()
    real_dump = json.dump

    def half_then_interrupt(obj, f, **kwargs):  # the kernel is interrupted halfway through the write
        text = json.dumps(obj, **kwargs)
        f.write(text[: len(text) // 2])
        f.flush()
        raise KeyboardInterrupt

    monkeypatch.setattr(store.json, "dump", half_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        progress.tick("core.hstu.stu_forward", by="test")
    assert pfile.read_bytes() == before
    json.loads(pfile.read_text())  # still whole, still valid
    assert [p.name for p in pfile.parent.iterdir()] == ["progress.json"]  # the half-written temp is gone
    monkeypatch.setattr(store.json, "dump", real_dump)
    progress.tick("core.hstu.stu_forward", by="test")
    assert progress.is_done("core.hstu.stu_forward") and progress.is_done("core.attention.time_bucket")


def _read_only(monkeypatch):
    """What a read-only folder does to every way of creating a file in it."""

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(store.tempfile, "mkstemp", denied)
    monkeypatch.setattr(store.os, "link", denied)
    monkeypatch.setattr(store, "open", denied, raising=False)


def test_a_read_only_folder_says_so_and_how_to_fix_it(pfile, monkeypatch):
    pfile.parent.mkdir(parents=True)
    _read_only(monkeypatch)
    with pytest.raises(progress.ProgressFileError, match="read-only.*HSTU_PROGRESS_FILE"):
        progress.tick("core.attention.time_bucket", by="test")
    # a passing check still passes and says why nothing was saved
    with pytest.warns(RuntimeWarning, match="could not save your progress.*HSTU_PROGRESS_FILE"):
        assert progress.mark_done("check_time_bucket")
    assert not pfile.exists()


def test_a_damaged_file_in_a_read_only_folder_is_left_untouched(pfile, monkeypatch):
    pfile.parent.mkdir(parents=True)
    pfile.write_bytes(b"{damaged")
    _read_only(monkeypatch)
    with pytest.warns(RuntimeWarning, match="left untouched.*read-only.*HSTU_PROGRESS_FILE"):
        assert progress.load()["items"] == {}
    assert pfile.read_bytes() == b"{damaged" and not _backups(pfile)


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes to read-only folders"
)
def test_a_really_read_only_folder(pfile):
    pfile.parent.mkdir(parents=True)
    pfile.write_bytes(b"{damaged")
    pfile.parent.chmod(0o555)
    try:
        with pytest.warns(RuntimeWarning, match="left untouched"):
            progress.load()
        with pytest.raises(progress.ProgressFileError, match="HSTU_PROGRESS_FILE"):
            progress.reset()
        assert pfile.read_bytes() == b"{damaged"
    finally:
        pfile.parent.chmod(0o755)


# ---- the card's items ----------------------------------------------------------------------------------

CARD = {  # the card's checklist, in its order and words
    "basics": ["理解推荐系统基本原理", "掌握 Transformer 架构", "了解序列建模问题", "熟悉 PyTorch 基础"],
    "core": ["理解 HSTU 架构", "掌握注意力机制", "了解 Sampled Softmax", "理解 Jagged Tensors"],
    "practice": ["成功下载数据集", "运行训练脚本", "理解配置文件", "调整超参数", "分析实验结果"],
    "advanced": ["阅读 HSTU 论文", "理解性能优化", "修改模型架构", "应用到新数据集"],
}
CARD_IDS = [
    "basics.recsys",
    "basics.transformer",
    "basics.sequence_modeling",
    "basics.pytorch",
    "core.hstu",
    "core.attention",
    "core.sampled_softmax",
    "core.jagged",
    "practice.download",
    "practice.train_script",
    "practice.config",
    "practice.tuning",
    "practice.analysis",
    "advanced.paper",
    "advanced.performance",
    "advanced.modify_arch",
    "advanced.new_dataset",
]


def test_the_card_is_the_checklist():
    card_items = [it for it in progress.ITEMS if it.group != "beyond"]
    assert [it.id for it in card_items] == CARD_IDS
    assert {g: [it.zh for it in card_items if it.group == g] for g in CARD} == CARD
    assert [progress.GROUPS[g][0] for g in CARD] == ["基础概念", "核心算法", "实践能力", "进阶技能"]
    assert progress.GROUPS["beyond"][0] == "超出卡片"
    assert "core.attention.relative_bias" in progress.all_ids()
    for it in progress.ITEMS:
        assert it.en and it.taught and it.ticked_by, it.id
        for nb, section in it.taught + tuple(t for st in it.steps for t in st.taught):
            assert nb.split("/")[0] in ("notebooks", "exercises") and section, nb
        for st in it.steps:
            assert st.id.startswith(it.id + ".") and progress.parent(st.id) is it
    assert len(set(progress.all_ids())) == len(progress.all_ids())


def test_every_taught_section_exists():
    """Each link names a notebook and a heading that the notebook has."""
    root = pathlib.Path(__file__).resolve().parents[1]
    for x in [*progress.ITEMS, *(st for it in progress.ITEMS for st in it.steps)]:
        for nb, section in x.taught:
            src = root / (nb.replace("exercises/", "exercises/solutions/") + ".py")
            headings = [
                line.lstrip("# ").strip() for line in src.read_text().splitlines() if re.match(r"# #+ ", line)
            ]
            assert section in headings, f"{x.id}: {nb} has no section {section!r}"


def test_every_check_named_by_an_item_exists():
    for x in [*progress.ITEMS, *(st for it in progress.ITEMS for st in it.steps)]:
        if x.check:
            assert callable(getattr(checks, x.check, None)), f"{x.id} names a missing check {x.check}"


def test_every_check_ticks_an_item():
    names = [n for n in dir(checks) if n.startswith("check_") and callable(getattr(checks, n))]
    assert len(names) >= 14
    from hstu_tutorial.progress.items import PART_CHECKS

    for name in names:
        assert progress.items_for_check(name) or name in PART_CHECKS, f"{name} ticks no checklist item"


def test_an_item_is_done_by_its_steps_or_its_own_tick(pfile):
    progress.mark_done("check_lengths_to_offsets")
    progress.mark_done("check_jagged_to_padded")
    assert progress.is_done("core.jagged.offsets") and not progress.is_done("core.jagged")
    assert progress.mark_done("check_jagged_hstu_attention") == ["core.jagged.jagged_attention"]
    assert progress.is_done("core.jagged") and progress.ticked_by("core.jagged") == "all its steps"
    # a step not yet done keeps its item open: three of four steps are not the item
    for name in ("check_softmax_attention", "check_hstu_attention", "check_time_bucket"):
        progress.mark_done(name)
    assert not progress.is_done("core.attention") and not progress.is_done("core.attention.relative_bias")
    assert progress.mark_done("core.attention.relative_bias", by="check_relative_bias")
    assert progress.is_done("core.attention")
    # an item's own tick (a quiz) is enough without its steps
    assert not progress.is_done("basics.sequence_modeling")
    progress.mark_done("basics.sequence_modeling", by="quiz")
    assert progress.is_done("basics.sequence_modeling")
    assert not progress.is_done("basics.sequence_modeling.user_sequences")
    assert progress.summary()["Core algorithms"] == (2, 4)


def test_passing_check_ticks_its_step(pfile):
    assert checks.check_time_bucket(lambda d: __import__("hstu_tutorial.ops", fromlist=["x"]).time_bucket(d))
    assert progress.is_done("core.attention.time_bucket")
    saved = json.loads(pfile.read_text())
    assert saved["items"]["core.attention.time_bucket"]["by"] == "check_time_bucket"


def test_failing_or_unattempted_check_ticks_nothing(pfile):
    def stub(d):
        raise NotImplementedError

    assert not checks.check_time_bucket(stub)
    assert not checks.check_time_bucket(lambda d: d)
    assert not progress.is_done("core.attention.time_bucket")


# ---- migration from the earlier 20-item checklist ------------------------------------------------------

OLD_FILE = {
    "version": 1,
    "items": {
        "basics.generative_framing": {"done": True, "by": "checkbox", "at": "2026-11-01T10:00:00+00:00"},
        "core.hstu_attention": {
            "done": True,
            "by": "check_hstu_attention",
            "at": "2026-11-02T10:00:00+00:00",
        },
        "basics.pointwise_attention": {
            "done": True,
            "by": "check_hstu_attention",
            "at": "2026-11-02T10:00:00+00:00",
        },
        "core.time_bucket": {"done": False, "by": "checkbox", "at": "2026-11-03T10:00:00+00:00"},
        "core.jagged_to_padded": {
            "done": True,
            "by": "check_jagged_to_padded",
            "at": "2026-11-04T10:00:00+00:00",
        },
        "practical.metrics": {"done": True, "by": "check_hr_ndcg", "at": "2026-11-05T10:00:00+00:00"},
        "advanced.new_dataset": {
            "done": True,
            "by": "check_project_results",
            "at": "2026-11-06T10:00:00+00:00",
        },
        "some.future_item": {"done": True, "by": "check_x", "at": "2026-11-07T10:00:00+00:00"},
    },
}


def test_an_old_file_is_migrated_not_lost(pfile):
    pfile.parent.mkdir(parents=True)
    pfile.write_text(json.dumps(OLD_FILE))
    with pytest.warns(UserWarning, match="earlier 20-item checklist"):
        state = progress.load()
    saved = json.loads(pfile.read_text())
    assert saved == state and saved["version"] == 2
    items = saved["items"]
    assert items["basics.recsys"]["migrated_from"] == "basics.generative_framing"
    assert items["core.attention.hstu_attention"]["by"] == "check_hstu_attention"
    assert items["core.jagged.jagged_to_padded"]["at"] == "2026-11-04T10:00:00+00:00"
    assert items["practice.analysis.metrics"]["migrated_from"] == "practical.metrics"
    assert items["advanced.new_dataset"]["done"] and items["some.future_item"]["done"]  # unknown ids kept
    assert "core.attention.time_bucket" not in items  # it was unticked
    assert progress.is_done("basics.recsys") and progress.is_done("advanced.new_dataset")
    assert not progress.is_done("practice.analysis")  # its per-bucket step is still open
    (backup,) = _backups(pfile)
    assert json.loads(backup.read_text()) == OLD_FILE  # the old file is kept as it was
    progress.load()  # already migrated: no second backup, no warning
    assert len(_backups(pfile)) == 1


def test_every_old_id_has_a_home():
    old_ids = [
        "basics.generative_framing",
        "basics.pointwise_attention",
        "basics.jagged_layout",
        "basics.leave_one_out",
        "basics.relative_bias",
        "core.softmax_attention",
        "core.hstu_attention",
        "core.time_bucket",
        "core.stu_forward",
        "core.jagged_to_padded",
        "core.jagged_attention",
        "practical.user_sequences",
        "practical.split",
        "practical.sampled_softmax",
        "practical.metrics",
        "practical.read_new_format",
        "practical.train_model",
        "advanced.triton_jagged",
        "advanced.triton_hstu_forward",
        "advanced.performance",
        "advanced.new_dataset",
    ]
    assert sorted(progress.MIGRATION) == sorted(old_ids)
    for old in old_ids:
        assert progress.MIGRATION[old] in progress.all_ids(), old


def test_old_ids_still_answer_is_done(pfile):
    progress.mark_done("check_hstu_attention")
    assert progress.is_done("core.hstu_attention")  # the earlier id, mapped


# ---- display -------------------------------------------------------------------------------------------


def test_text_and_html_show_groups_items_and_ticks(pfile, capsys):
    progress.mark_done("check_triton_jagged_to_padded")
    progress.mark_done("check_triton_hstu_forward")
    text = progress.show_checklist()
    assert capsys.readouterr().out.startswith("基础概念 Basic concepts (0/4)")
    assert "[x] 理解性能优化 · Understand performance optimisation" in text
    assert "[ ] 阅读 HSTU 论文 · Read the HSTU paper" in text and "进阶技能 Advanced skills (1/4)" in text
    page = progress.checklist()._repr_html_()
    for zh, en in progress.GROUPS.values():
        assert zh in page and en in page
    assert page.count('class="hstu-checklist-item"') == len(progress.ITEMS)
    assert 'data-id="advanced.performance" data-done="1"' in page
    assert 'data-id="advanced.paper" data-done="0"' in page
    assert 'href="../exercises/05_triton.ipynb#1.-A-jagged-kernel:-jagged-→-padded"' in page
    assert "<input" not in page  # nothing to tick by hand
    assert repr(progress.checklist()) == progress.checklist_text()


def test_the_display_bundle_has_html_and_text(pfile):
    data = progress.checklist()._bundle()  # what Jupyter saves with the notebook
    assert set(data) == {"text/html", "text/plain"} and "VBox" not in data["text/plain"]
    assert data["text/html"].startswith('<div class="hstu-checklist">')


# ---- ticks from runs: the data loader and the training CLI ---------------------------------------------


def test_a_whole_movielens_folder_ticks_download(pfile):
    import numpy as np
    import pandas as pd

    from hstu_tutorial.progress import hooks

    def ratings(n, users):
        return pd.DataFrame({"user_id": np.arange(n) % users + 1, "item_id": np.arange(n) % 97 + 1})

    assert not hooks.dataset_loaded("ml-1m", ratings(999_000, 6_040), "data/ml-1m-u2999")  # a subset
    assert not hooks.dataset_loaded("synthetic", ratings(1_000_209, 6_040), "cache/synthetic")
    assert not progress.is_done("practice.download")
    assert hooks.dataset_loaded("ml-100k", ratings(100_000, 943), "data/ml-100k")
    assert progress.is_done("practice.download")
    assert json.loads(pfile.read_text())["items"]["practice.download"]["by"].startswith(
        "get_reco_dataset('ml-100k')"
    )


def test_loading_synthetic_data_ticks_nothing(pfile, tmp_path):
    from hstu_tutorial.data import get_reco_dataset

    ds = get_reco_dataset("synthetic", max_seq_len=20, data_dir=tmp_path / "syn", verbose=False)
    get_reco_dataset("ml-1m", max_seq_len=20, data_dir=ds.folder, verbose=False)  # ML-1M format, not ML-1M
    assert not progress.is_done("practice.download") and not pfile.exists()


@pytest.mark.parametrize(
    "status, ticks",
    [("completed", True), ("early_stopped", True), ("interrupted", False), ("stopped", False)],
)
def test_only_a_completed_run_ticks_the_training_script(pfile, status, ticks):
    from hstu_tutorial.progress import hooks

    assert hooks.training_finished({"status": status, "run_dir": "exps/run"}) is ticks
    assert progress.is_done("practice.train_script") is ticks


def test_a_cli_run_ticks_the_training_script(pfile, tmp_path, capsys):
    from hstu_tutorial.training.cli import main

    sets = [
        "num_epochs=1",
        *TINY_SETS,
        f"data_dir={tmp_path / 'data'}",
        f"exp_dir={tmp_path / 'exps'}",
    ]
    assert main(["--config", "synthetic/hstu-small", *set_args(*sets)]) == 0
    assert progress.is_done("practice.train_script")
    assert json.loads(pfile.read_text())["items"]["practice.train_script"]["by"].startswith("hstu-train: ")


def test_the_test_suite_never_writes_the_learners_file():
    assert os.environ["HSTU_PROGRESS_FILE"] != str(pathlib.Path.home() / ".hstu_tutorial" / "progress.json")
