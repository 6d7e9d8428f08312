"""AdamW for the trainer: torch.optim.AdamW that runs without importing torch._dynamo, the compiler.

torch.optim wraps `Optimizer.step` (`_use_grad_for_differentiable`) and `add_param_group`, `zero_grad`,
`state_dict`, `load_state_dict` (`torch._disable_dynamo`) so that torch.compile leaves them alone. Both
wrappers import torch._dynamo on first use, which pulls in sympy, torch.distributed.fsdp and more: the
trainer's set-up took 5.8-6.3 s with it and 1.0 s without, on an NVIDIA H200 machine (2026-12-01,
`benchmarks/trace_setup.py`). A run that compiles nothing needs none of it. This class runs the same
update code:

  * `step` calls the unwrapped AdamW.step under torch.no_grad(), what the wrapper does when the
    optimizer is not `differentiable` (the wrapper's other work only matters inside torch.compile);
  * the four methods find their "never compile" version in the attribute `__dynamo_disable`, which
    `torch._disable_dynamo` reads before importing anything: set to the method itself, it skips the import.

Once torch._dynamo is loaded anyway (a notebook used torch.compile), or on a torch whose wrappers look
different (no `__wrapped__`), everything falls back to torch's own path. The state dict is AdamW's.
"""

from __future__ import annotations

import sys

import torch

_DISABLED_METHODS = ("add_param_group", "zero_grad", "state_dict", "load_state_dict")


def _unwrapped(method):
    return getattr(method, "__wrapped__", None)


def _skip_dynamo_import() -> bool:
    """Mark the four wrapped Optimizer methods as already "not compiled"; False if that is not possible."""
    if "torch._dynamo" in sys.modules:
        return False
    raws = [_unwrapped(getattr(torch.optim.Optimizer, name, None)) for name in _DISABLED_METHODS]
    if any(raw is None for raw in raws) or _unwrapped(torch.optim.AdamW.step) is None:
        return False
    for raw in raws:
        if getattr(raw, "__dynamo_disable", None) is None:
            setattr(raw, "__dynamo_disable", raw)  # noqa: B010 - the attribute torch._disable_dynamo reads
    return True


class AdamW(torch.optim.AdamW):
    """torch.optim.AdamW (same arguments, same state dict) that does not import torch._dynamo."""

    def __init__(self, params, **kwargs):
        self._direct = _skip_dynamo_import()
        super().__init__(params, **kwargs)

    def step(self, closure=None):
        """One AdamW update (see torch.optim.AdamW.step)."""
        if not self._direct or "torch._dynamo" in sys.modules or self.defaults.get("differentiable"):
            return super().step(closure)
        with torch.no_grad():
            return _unwrapped(torch.optim.AdamW.step)(self, closure)
