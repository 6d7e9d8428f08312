"""Test set-up: CPU only, Triton in its interpreter, two threads, headless matplotlib."""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("HSTU_PRESET", "small")

import torch  # noqa: E402

torch.set_num_threads(2)
