"""No kernel launch hands a caller's tensor to an autotuner as a buffer it may zero or restore.

Triton's autotuner zeroes every argument named in `reset_to_zero` (and snapshots/copies back those in
`restore_value`) around each timing run. If such an argument is an input the caller keeps (say q, passed
as a dummy for an unused pointer), tuning silently overwrites it. These tests record every launch,
bind its arguments to the kernel's parameter names and check the tuner's lists against the caller's
tensors, by storage overlap.
"""

import pytest
import torch
from triton.runtime.autotuner import Autotuner

import hstu_tutorial.ops.triton.hstu_attention_autograd as tha
from hstu_tutorial.ops import use_options
from hstu_tutorial.ops.triton import triton_hstu_attention, triton_hstu_attention_rel_bias

pytestmark = pytest.mark.skipif(not tha.is_interpreter(), reason="records launches of the CPU interpreter")


def _tuners():
    """The autotuned kernels of the attention, keyed by the id of the kernel each one wraps."""
    return {id(obj.fn): obj for obj in vars(tha).values() if isinstance(obj, Autotuner)}


def _storage_span(t):
    s = t.untyped_storage()
    return s.data_ptr(), s.data_ptr() + max(s.nbytes(), 1)


def _shares_storage(a, b):
    (a0, a1), (b0, b1) = _storage_span(a), _storage_span(b)
    return a0 < b1 and b0 < a1


@pytest.fixture(params=["fixed tiles", "autotuned"])
def launch_path(request, monkeypatch):
    """Run the kernels with the interpreter's fixed tiles, or through the autotuners themselves (their
    timing runs, resets included, executed by the interpreter, from an empty tuning cache)."""
    if request.param == "autotuned":
        monkeypatch.setattr(tha, "_tune", lambda opts: True)
        for tuner in _tuners().values():
            monkeypatch.setattr(tuner, "cache", {})
    return request.param


@pytest.fixture
def launches(monkeypatch):
    """Record (kernel, bound arguments) of every launch, tuned or not (both end in the kernel's run)."""
    kernel_cls = type(tha.hstu_fwd_kernel)
    original = kernel_cls.run
    seen = []

    def run(self, *args, **kwargs):
        seen.append((self, args, dict(kwargs)))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(kernel_cls, "run", run)
    return seen


def _tuner_buffers(seen):
    """(kernel name, argument name, tensor) for every argument a tuner would reset or restore."""
    tuners = _tuners()
    out = []
    for kernel, args, kwargs in seen:
        tuner = tuners.get(id(kernel))
        if tuner is None:
            continue
        bound = dict(zip(tuner.arg_names, args), **kwargs)
        for name in list(tuner.reset_to_zero) + list(tuner.restore_value):
            out.append((kernel.__name__, name, bound[name]))
    return out


def _inputs(bias, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([3, 20, 1, 9])
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
    T, H, d = int(lengths.sum()), 2, 16
    q, k, v = (torch.randn(T, H, d, generator=g).requires_grad_() for _ in range(3))
    x = dict(q=q, k=k, v=v, offsets=offsets)
    if bias == "rab":
        x["rab"] = torch.randn(4, 20, 20, generator=g).requires_grad_()
    elif bias == "rab_per_head":  # (B, H, N, N) fp32: its gradient has the shape of the dense buffer
        x["rab"] = torch.randn(4, H, 20, 20, generator=g).requires_grad_()
    elif bias == "rab_no_grad":
        x["rab"] = torch.randn(4, 20, 20, generator=g)
    elif bias == "rel":
        x["ts"] = torch.cumsum(torch.randint(1, 10**5, (T,), generator=g), 0)
        x["nts"] = x["ts"] + torch.randint(0, 10**6, (T,), generator=g)
        x["pos_w"] = (torch.randn(2 * 20 - 1, generator=g) * 0.1).requires_grad_()
        x["ts_w"] = (torch.randn(33, generator=g) * 0.1).requires_grad_()
    return x


def _forward_backward(x):
    if "pos_w" in x:
        out = triton_hstu_attention_rel_bias(
            x["q"], x["k"], x["v"], x["offsets"], x["ts"], x["nts"], x["pos_w"], x["ts_w"], norm=20.0
        )
    else:
        out = triton_hstu_attention(x["q"], x["k"], x["v"], x["offsets"], rab=x.get("rab"))
    dout = torch.randn_like(out)
    x["dout_before_backward"] = dout.clone()
    wrt = [t for t in x.values() if t.requires_grad]
    grads = torch.autograd.grad(out, wrt, dout)
    return out, dout, grads


CASES = [  # (bias, options): every way the backward allocates DQ_G and DRAB
    ("none", {}),
    ("rab", {}),
    ("rab_per_head", {}),
    ("rab_no_grad", {}),
    ("rel", {"rel_bias_grad": "dense"}),
    ("rel", {"rel_bias_grad": "atomic"}),
    ("none", {"dq_mode": "atomic"}),
    ("rab_per_head", {"dq_mode": "atomic"}),
]


@pytest.mark.parametrize("bias,options", CASES)
def test_tuner_buffers_are_never_caller_tensors(bias, options, launch_path, launches):
    x = _inputs(bias)
    with use_options(**options, interpreter_block=(16, 16)):
        out, dout, grads = _forward_backward(x)
    x.pop("dout_before_backward")
    kept = dict(x, out=out, dout=dout, **{f"grad{i}": g for i, g in enumerate(grads)})
    buffers = _tuner_buffers(launches)
    assert any(name for _, name, _ in buffers), "no tuned kernel was launched: the interception is broken"
    for kname, t in kept.items():  # inputs first, then the output, dO and the returned gradients
        for kernel, name, buf in buffers:
            assert not _shares_storage(buf, t), (
                f"{kernel}: argument {name}, which the autotuner zeroes/restores between timing runs, "
                f"shares storage with the caller's {kname}"
            )


@pytest.mark.parametrize("bias,options", CASES)
def test_inputs_bit_identical_after_forward_and_backward(bias, options, launch_path):
    x = _inputs(bias, seed=1)
    before = {name: t.detach().clone() for name, t in x.items()}
    with use_options(**options, interpreter_block=(16, 16)):
        out, dout, grads = _forward_backward(x)
    assert all(torch.isfinite(g).all() for g in grads)
    for name, t in before.items():
        assert torch.equal(x[name].detach(), t), f"{name} changed during forward+backward ({launch_path})"
    assert torch.equal(dout, x["dout_before_backward"]), f"dO changed during the backward ({launch_path})"
