"""Test set-up: CPU only, Triton in its interpreter, two threads, headless matplotlib."""

import os
import tempfile

os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("HSTU_PRESET", "small")
# passing checks, quizzes, data loads and CLI runs tick the learning checklist: never the learner's own file
os.environ["HSTU_PROGRESS_FILE"] = os.path.join(tempfile.mkdtemp(prefix="hstu-tests-"), "progress.json")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """The synthetic dataset, histories cut at 20, validation protocol: what the small CPU runs train on."""
    from hstu_tutorial.data import get_reco_dataset

    root = tmp_path_factory.mktemp("data")
    return get_reco_dataset("synthetic", max_seq_len=20, data_dir=root, protocol="validation", verbose=False)
