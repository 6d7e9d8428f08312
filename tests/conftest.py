"""Test set-up: CPU only, Triton in its interpreter, two threads, headless matplotlib."""

import os
import tempfile

os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("HSTU_PRESET", "small")
# passing checks, quizzes, data loads and CLI runs tick the learning checklist: never the learner's own file
os.environ["HSTU_PROGRESS_FILE"] = os.path.join(tempfile.mkdtemp(prefix="hstu-tests-"), "progress.json")

import torch  # noqa: E402

torch.set_num_threads(2)
