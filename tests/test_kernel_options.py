"""The kernel options object: defaults, environment, validation, scoping, and that kernels read it."""

import dataclasses
import threading

import pytest
import torch

import hstu_tutorial.ops.options as options_mod
from hstu_tutorial.ops import KernelOptions, get_options, set_options, use_options


def test_defaults_and_environment(monkeypatch):
    for var in (
        "HSTU_FUSED_LAYER_NORM",
        "HSTU_FUSED_LOSS",
        "HSTU_TRITON_REL_BIAS_GRAD",
        "HSTU_TRITON_DQ_MODE",
        "HSTU_TRITON_FP32_PRECISION",
    ):
        monkeypatch.delenv(var, raising=False)
    assert KernelOptions.from_env() == KernelOptions()
    monkeypatch.setenv("HSTU_FUSED_LAYER_NORM", "0")
    monkeypatch.setenv("HSTU_TRITON_REL_BIAS_GRAD", "dense")
    monkeypatch.setenv("HSTU_TRITON_DQ_MODE", "atomic")
    monkeypatch.setenv("HSTU_TRITON_FP32_PRECISION", "ieee")
    opts = KernelOptions.from_env()
    assert (opts.fused_layer_norm, opts.rel_bias_grad, opts.dq_mode, opts.fp32_precision) == (
        False,
        "dense",
        "atomic",
        "ieee",
    )
    assert opts.fused_loss  # unset: on
    monkeypatch.setenv("HSTU_FUSED_LOSS", "0")
    assert KernelOptions.from_env().fused_loss is False
    monkeypatch.setenv("HSTU_TRITON_DQ_MODE", "fast")
    with pytest.raises(ValueError, match="dq_mode .* got 'fast'.*HSTU_TRITON_DQ_MODE=fast"):
        KernelOptions.from_env()


@pytest.mark.parametrize(
    "changes,match",
    [
        ({"autotune": 1}, "autotune must be True or False"),
        ({"rel_bias_grad": "sparse"}, "rel_bias_grad must be one of"),
        ({"dq_mode": None}, "dq_mode must be one of"),
        ({"fp32_precision": "fp16"}, "fp32_precision must be one of"),
        ({"interpreter_block": (64, 8)}, "interpreter_block must be two powers of two >= 16"),
        ({"interpreter_block": (48, 64)}, "interpreter_block must be two powers of two >= 16"),
    ],
)
def test_bad_values_name_the_field(changes, match):
    with pytest.raises(ValueError, match=match):
        KernelOptions().replace(**changes)


def test_unknown_option_is_a_type_error():
    with pytest.raises(TypeError, match="no option dq_modes"):
        KernelOptions().replace(dq_modes="atomic")
    with pytest.raises(dataclasses.FrozenInstanceError):
        KernelOptions().autotune = False


def test_use_options_is_scoped_and_nests():
    base = get_options()
    with use_options(autotune=False) as outer:
        assert get_options() is outer and outer.autotune is False
        with use_options(dq_mode="atomic", interpreter_block=[16, 32]):
            assert get_options().autotune is False and get_options().dq_mode == "atomic"
            assert get_options().interpreter_block == (16, 32)
        assert get_options() is outer
    assert get_options() == base
    with pytest.raises(RuntimeError), use_options(poison_outputs=True):
        raise RuntimeError("restored even on an error")
    assert get_options() == base


def test_set_options_changes_the_default_and_returns_the_previous(monkeypatch):
    monkeypatch.setattr(options_mod, "_process_default", KernelOptions())
    previous = set_options(autotune=False)
    assert previous == KernelOptions() and get_options().autotune is False
    with use_options(autotune=True):
        assert get_options().autotune is True  # a scope wins over the default
    seen = []
    t = threading.Thread(target=lambda: seen.append(get_options().autotune))
    t.start()
    t.join()
    assert seen == [False]  # the default is process-wide, other threads see it


def test_kernels_read_options_at_call_time_and_backward_keeps_the_forwards(monkeypatch):
    tha = pytest.importorskip("hstu_tutorial.ops.triton.hstu_attention_autograd")
    kinds = []
    original = tha._launch

    def launch(kind, *args):
        kinds.append((kind, args[-1].dq_mode))  # args[-1]: the options the launch runs with
        return original(kind, *args)

    monkeypatch.setattr(tha, "_launch", launch)
    offsets = torch.tensor([0, 5, 12])
    q, k, v = (torch.randn(12, 1, 16, requires_grad=True) for _ in range(3))
    with use_options(dq_mode="atomic"):
        out = tha.triton_hstu_attention(q, k, v, offsets)
    out.sum().backward()  # outside the scope: the forward's options still hold
    assert kinds == [("fwd", "atomic"), ("dkdv", "atomic")]  # no separate dQ kernel
    kinds.clear()
    tha.triton_hstu_attention(q, k, v, offsets).sum().backward()
    assert [k for k, _ in kinds] == ["fwd", "dkdv", "dq"]
