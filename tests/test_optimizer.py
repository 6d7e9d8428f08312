"""training.optimizer.AdamW: the same updates and state as torch.optim.AdamW, without importing torch._dynamo."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import json, sys
import torch
from hstu_tutorial.training.optimizer import AdamW
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2))
opt = AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.98), weight_decay=0.1)
for _ in range(5):
    x = torch.randn(8, 4)
    opt.zero_grad(set_to_none=True)
    model(x).pow(2).sum().backward()
    opt.step()
opt.load_state_dict(opt.state_dict())
print(json.dumps({"dynamo": "torch._dynamo" in sys.modules,
                  "params": [p.detach().flatten().tolist() for p in model.parameters()]}))
"""


def test_adamw_matches_torch_and_never_imports_the_compiler():
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env={**__import__("os").environ, "PYTHONPATH": str(ROOT)},
    )
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["dynamo"] is False, "constructing or stepping the optimizer imported torch._dynamo"
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.98), weight_decay=0.1)
    for _ in range(5):
        x = torch.randn(8, 4)
        opt.zero_grad(set_to_none=True)
        model(x).pow(2).sum().backward()
        opt.step()
    want = [p.detach().flatten().tolist() for p in model.parameters()]
    assert got["params"] == want  # bit for bit: the same update code runs


def test_state_dict_is_torch_adamw_state():
    from hstu_tutorial.training.optimizer import AdamW

    p = torch.nn.Parameter(torch.ones(3))
    ours = AdamW([p], lr=0.1)
    p.grad = torch.ones(3)
    ours.step()
    theirs = torch.optim.AdamW([torch.nn.Parameter(torch.ones(3))], lr=0.1)
    theirs.load_state_dict(ours.state_dict())
    assert torch.equal(theirs.state_dict()["state"][0]["exp_avg"], ours.state_dict()["state"][0]["exp_avg"])
