"""benchmarks/check_kernels_gpu.py on a CPU: its case function on tiny cases (Triton interpreter), with
the autotuner itself driven through the interpreter as the script's --small mode does."""

import pytest
import torch

import hstu_tutorial.ops.triton.hstu_attention_autograd as tha
from benchmarks import check_kernels_gpu as ck


@pytest.fixture
def tuned_in_interpreter(monkeypatch):
    monkeypatch.setattr(tha, "_tune", lambda opts: opts.autotune)
    for tuner in (tha._fwd_tuned, tha._dkdv_tuned, tha._dq_tuned):
        monkeypatch.setattr(tuner, "cache", {})  # tune again: the timing runs (and resets) happen here


@pytest.mark.parametrize(
    "case",
    [
        ck.Case(torch.float32, "rab", True, "jagged", 3, 24, 2, 8),
        ck.Case(torch.float32, "none", False, "dense", 2, 20, 1, 10),
        ck.Case(torch.bfloat16, "rel", True, "jagged", 3, 20, 1, 16),
        ck.Case(torch.bfloat16, "rel", True, "padded", 4, 20, 1, 16),
        ck.Case(torch.float32, "none", False, "padded", 3, 24, 2, 8),
    ],
    ids=lambda c: c.name,
)
def test_run_case_passes_on_tiny_cases(case, tuned_in_interpreter):
    r = ck.run_case(case, "cpu")
    assert r["ok"], ck.format_row(r)
    assert set(r["errs"]) >= {"out", "dq", "dk", "dv"} and not r["changed"] and not r["nan"]
    assert "PASS" in ck.format_row(r)


def test_run_case_reports_a_changed_input(tuned_in_interpreter, monkeypatch):
    # A kernel wrapper that writes into q (what the tuner did on the H200) must show up as FAIL.
    original = tha._launch

    def zeroing_launch(kind, grid_dim, max_seq_len, num_bh, args, consts, opts):
        original(kind, grid_dim, max_seq_len, num_bh, args, consts, opts)
        if kind == "dkdv":
            args[0].zero_()  # q

    monkeypatch.setattr(tha, "_launch", zeroing_launch)
    r = ck.run_case(ck.Case(torch.float32, "none", True, "jagged", 2, 20, 1, 8), "cpu")
    assert not r["ok"] and "q@bwd" in r["changed"] and "FAIL" in ck.format_row(r)


def test_time_buckets_check():
    b = ck.check_time_buckets("cpu")
    assert b["ok"] and b["off_edge_mismatch"] == 0


def test_case_list_covers_every_kind():
    for small in (True, False):
        cs = ck.cases(small)
        assert {c.dtype for c in cs} == {torch.float32, torch.bfloat16}
        assert {c.bias for c in cs} == {"none", "rab", "rel"}
        assert {c.causal for c in cs} == {True, False} and {c.lengths for c in cs} == {
            "jagged",
            "dense",
            "padded",
        }
        assert len({(c.N, c.H, c.d) for c in cs}) == (3 if small else 4) and len({c.B for c in cs}) >= 3
    # on the GPU: a head size that is no power of two on the TMA forward (bf16, causal, 16-byte rows)
    odd = [c for c in ck.cases(False) if c.d & (c.d - 1)]
    assert any(c.dtype == torch.bfloat16 and c.causal and (c.d * 2) % 16 == 0 for c in odd)


def test_sampled_softmax_check_passes_and_catches_faults(monkeypatch):
    import hstu_tutorial.ops.triton.sampled_softmax as tss

    for case in ck.loss_cases(small=True):
        for backward in tss.BACKWARDS:
            r = ck.check_sampled_softmax(*case, "cpu", backward=backward)
            assert r["ok"] and not r["changed"] and not r["nan"], ck.format_row(r)
            assert f"{backward} backward" in r["case"]
    real = tss.triton_sampled_softmax

    def writes_into_query(q, e, cols, t, backward=None):
        out = real(q, e, cols, t, backward)
        q.data[0, 0] += 1.0  # as a kernel writes: autograd's version counter does not see it
        return out

    monkeypatch.setattr(tss, "triton_sampled_softmax", writes_into_query)
    r = ck.check_sampled_softmax(*ck.loss_cases(small=True)[0], "cpu")
    assert not r["ok"] and r["changed"] == ["q"] and "FAIL" in ck.format_row(r)
    # a kernel that forgets the 1/tau of the gradient: the errors, not the input checks, must fail it
    monkeypatch.setattr(tss, "triton_sampled_softmax", real)
    monkeypatch.setattr(tss._SampledSoftmax, "backward", _scaled_backward(tss._SampledSoftmax.backward))
    r = ck.check_sampled_softmax(*ck.loss_cases(small=True)[0], "cpu")
    assert not r["ok"] and not r["changed"] and r["errs"]["dq"] > 0.5


def _scaled_backward(backward):
    def wrong(ctx, dloss):
        dq, de, *rest = backward(ctx, dloss)
        return (dq * 0.05, de * 0.05, *rest)

    return staticmethod(wrong)


def test_sasrec_output_check_passes_and_catches_faults(monkeypatch):
    import hstu_tutorial.ops.triton.sasrec_output as so

    for case in ck.sasrec_output_cases(small=True):
        r = ck.check_sasrec_output(*case, "cpu")
        assert r["ok"] and not r["changed"] and not r["nan"] and set(r["errs"]) == {
            "out", "a", "x_q", "W_o", "b_o", "W_1", "b_1", "W_2", "b_2"
        }, ck.format_row(r)  # fmt: skip
    dropout_case = ck.sasrec_output_cases(small=True)[1]
    # masks the check cannot see: the kernels' dropout no longer matches `dropout_masks`
    real_masks = so.dropout_masks
    monkeypatch.setattr(so, "dropout_masks", lambda seed, *a: real_masks(seed + 1, *a))
    r = ck.check_sasrec_output(*dropout_case, "cpu")
    assert not r["ok"] and not r["changed"] and r["errs"]["out"] > 0.05
    monkeypatch.setattr(so, "dropout_masks", real_masks)
    # a backward that forgets the residual's gradient into x_q: only that gradient's error may show it
    real_backward = so._SASRecOutput.backward

    def no_residual(ctx, g):
        grads = list(real_backward(ctx, g))
        grads[1] = grads[1] * 0.5
        return tuple(grads)

    monkeypatch.setattr(so._SASRecOutput, "backward", staticmethod(no_residual))
    r = ck.check_sasrec_output(*dropout_case, "cpu")
    assert not r["ok"] and r["errs"]["x_q"] > 0.3 and r["errs"]["a"] < 1e-3


def test_sasrec_input_check_passes_and_catches_faults(monkeypatch):
    import hstu_tutorial.ops.triton.sasrec_input as si

    for case in ck.sasrec_input_cases(small=True):
        r = ck.check_sasrec_input(*case, "cpu")
        assert r["ok"] and not r["changed"] and not r["nan"] and set(r["errs"]) == {"out", "x", "W", "b"}, (
            ck.format_row(r)
        )
    case = ck.sasrec_input_cases(small=True)[0]
    real_backward = si._SASRecInput.backward

    def halved_bias(ctx, *grads):  # a backward whose bias gradient is off: only that error may show it
        out = list(real_backward(ctx, *grads))
        out[2] = out[2] * 0.5
        return tuple(out)

    monkeypatch.setattr(si._SASRecInput, "backward", staticmethod(halved_bias))
    r = ck.check_sasrec_input(*case, "cpu")
    assert not r["ok"] and r["errs"]["b"] > 0.05 and r["errs"]["x"] < 1e-3
    monkeypatch.setattr(si._SASRecInput, "backward", real_backward)
    real_forward = si._SASRecInput.forward

    def dirty_padding(ctx, *args):  # q's padding columns not zero: SDPA would read them
        x_q, q, k, v = real_forward(ctx, *args)
        return x_q, q + 1.0, k, v

    monkeypatch.setattr(si._SASRecInput, "forward", staticmethod(dirty_padding))
    r = ck.check_sasrec_input(*case, "cpu")
    assert not r["ok"] and "padding not 0" in r["case"]

    def writes_its_input(ctx, x, *rest):  # a kernel that writes into its input
        out = real_forward(ctx, x, *rest)
        x.view(-1)[0] += 1.0
        return out

    monkeypatch.setattr(si._SASRecInput, "forward", staticmethod(writes_its_input))
    r = ck.check_sasrec_input(*case, "cpu")
    assert not r["ok"] and "x" in r["changed"]


def test_tf32_yardstick_restores_the_switch_and_takes_the_largest_error():
    before = torch.backends.cuda.matmul.allow_tf32
    ref = [torch.ones(4, dtype=torch.float64)]
    grads_ref = [torch.ones(3, dtype=torch.float64)]

    def spelled(dtype):  # an output 1% off and a gradient 5% off, whatever the precision
        return [torch.full((4,), 1.01, dtype=dtype)], [torch.full((3,), 1.05, dtype=dtype)]

    assert abs(ck.tf32_yardstick(spelled, ref, grads_ref) - 0.05) < 1e-6
    assert torch.backends.cuda.matmul.allow_tf32 == before
