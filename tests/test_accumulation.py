"""Gradient accumulation gives the large batch's gradient; activation recomputation changes nothing."""

import math

import pytest
import torch

from hstu_tutorial.memory import accumulated_backward, blocks_of, enable_recompute, is_recomputing
from hstu_tutorial.modules import hstu_encoder, sasrec_encoder
from hstu_tutorial.ops import lengths_to_offsets

torch.set_num_threads(2)

FAST = dict(
    max_seq_len=20,
    embedding_dim=16,
    dqk=16,
    dv=16,
    ffn_hidden=16,
    batch_size=32,
    eval_batch_size=512,
    tensorboard=False,
    progress=False,
    device="cpu",
    save_checkpoints=False,
    protocol="validation",
)


def _grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def _trainer_grads(dataset, **overrides):
    """Gradients of the trainer's first step on users 0..31 (the optimizer step is skipped)."""
    from hstu_tutorial.train import Trainer, load_config

    cfg = load_config("synthetic/hstu-small", {**FAST, **overrides})
    tr = Trainer(cfg, dataset=dataset, verbose=False)
    tr.optimizer.step = lambda *a, **k: None  # keep the gradients of this step
    rs = tr.splits["train"]
    index = torch.arange(32)
    micro = cfg.batch_size // cfg.grad_accum_steps
    totals = rs.batch_totals(index, micro) if tr.layout == "jagged" else None
    loss = tr.step(index, totals)
    return _grads(tr.model), float(loss)


@pytest.mark.parametrize("layout", ["jagged", "padded"])
def test_trainer_accumulated_gradients_equal_large_batch(dataset, layout):
    # Deterministic maths (no dropout, full softmax) so that only the accumulation can differ.
    kw = dict(dropout=0.0, loss="full_softmax", layout=layout)
    big, loss_big = _trainer_grads(dataset, grad_accum_steps=1, **kw)
    acc, loss_acc = _trainer_grads(dataset, grad_accum_steps=4, **kw)
    assert big.keys() == acc.keys() and len(big) > 5
    for name in big:
        torch.testing.assert_close(acc[name], big[name], rtol=1e-4, atol=1e-7, msg=name)
    assert loss_acc == pytest.approx(loss_big, rel=1e-5)


def _toy_batches(num_items=30, seed=0):
    """Histories of very different lengths: weighting micro-batches by 1/k instead of by their number of
    positions would give a visibly wrong gradient."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([2, 3, 15, 18, 1, 2, 19, 20])  # (B,)
    T = int(lengths.sum())
    ids = torch.randint(1, num_items + 1, (T,), generator=g)
    targets = torch.randint(1, num_items + 1, (T,), generator=g)
    return lengths, ids, targets


def test_accumulated_backward_weights_micro_batches_by_positions():
    torch.manual_seed(0)
    lengths, ids, targets = _toy_batches()
    emb = torch.nn.Embedding(31, 8)
    head = torch.nn.Linear(8, 31)
    params = list(emb.parameters()) + list(head.parameters())
    offsets = lengths_to_offsets(lengths)

    def mean_loss(rows):  # mean cross-entropy over the positions of the histories `rows`
        tok = torch.cat([torch.arange(offsets[r], offsets[r + 1]) for r in rows])
        return torch.nn.functional.cross_entropy(head(emb(ids[tok])), targets[tok])

    mean_loss(range(8)).backward()
    full = [p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    micro = [range(0, 2), range(2, 4), range(4, 6), range(6, 8)]
    counts = [int(lengths[list(m)].sum()) for m in micro]
    loss = accumulated_backward(mean_loss, micro, counts)
    for g_acc, g_full in zip([p.grad for p in params], full):
        torch.testing.assert_close(g_acc, g_full, rtol=1e-5, atol=1e-7)
    with torch.no_grad():
        assert float(loss) == pytest.approx(float(mean_loss(range(8))), rel=1e-5)
    # The naive 1/k weighting is measurably different on these uneven micro-batches.
    for p in params:
        p.grad = None
    accumulated_backward(mean_loss, micro, [1, 1, 1, 1])
    assert not torch.allclose(params[-1].grad, full[-1], rtol=1e-3, atol=1e-5)
    with pytest.raises(ValueError, match="4 micro-batches but 3 counts"):
        accumulated_backward(mean_loss, micro, [1, 1, 1])


class _Batch:
    def __init__(self, lengths, num_items, N, seed=0):
        g = torch.Generator().manual_seed(seed)
        T = int(lengths.sum())
        self.item_ids = torch.randint(1, num_items + 1, (T,), generator=g)
        self.timestamps = 1_000_000 + torch.cumsum(torch.randint(0, 5000, (T,), generator=g), 0)
        self.offsets = lengths_to_offsets(lengths)
        self.lengths = lengths
        self.max_len = N
        self.target_item_ids = torch.randint(1, num_items + 1, (lengths.numel(),), generator=g)
        self.target_timestamps = self.timestamps.max().repeat(lengths.numel()) + 100


@pytest.mark.parametrize("kind", ["hstu", "sasrec"])
def test_recompute_changes_no_output_and_no_gradient(kind):
    N, num_items = 12, 40
    build = hstu_encoder if kind == "hstu" else sasrec_encoder
    kw = dict(embedding_dim=16, num_blocks=2, max_seq_len=N, dropout=0.3)
    if kind == "hstu":
        kw.update(dqk=8, dv=8)
    torch.manual_seed(0)
    model = build(num_items, **kw)
    batch = _Batch(torch.tensor([3, 12, 7, 1]), num_items, N)
    grad_out = torch.randn(int(batch.lengths.sum()), 16)

    def run():
        model.zero_grad(set_to_none=True)
        torch.manual_seed(123)  # the same dropout masks in both runs
        out = model(batch)  # (T, D)
        out.backward(grad_out)
        return out.detach(), _grads(model)

    from hstu_tutorial.memory import SavedBytes

    model.train()
    out_plain, g_plain = run()
    with SavedBytes(model) as plain_bytes:
        model(batch)
    keys = set(model.state_dict())
    enable_recompute(model)
    assert is_recomputing(model) and set(model.state_dict()) == keys  # checkpoints still load
    out_rc, g_rc = run()
    with SavedBytes(model) as rc_bytes:
        model(batch)
    torch.testing.assert_close(out_rc, out_plain, rtol=0, atol=0)
    assert g_rc.keys() == g_plain.keys()
    for name in g_plain:
        torch.testing.assert_close(g_rc[name], g_plain[name], rtol=1e-6, atol=1e-8, msg=name)
    # What recomputation is for: fewer bytes kept for the backward pass.
    assert rc_bytes.mib < 0.6 * plain_bytes.mib
    # Eval and attention maps take the plain path; turning it off restores the class's forward.
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(batch), enable_recompute(model, False)(batch))
    assert not is_recomputing(model)
    assert all("forward" not in b.__dict__ for b in blocks_of(model))


def test_recompute_explains_a_model_without_blocks():
    with pytest.raises(TypeError, match="neither a `layers` nor a `blocks`"):
        enable_recompute(torch.nn.Linear(2, 2))


# ---- DistributedDataParallel under torchrun (two CPU processes, gloo) -----------------------------------

needs_ddp = pytest.mark.skipif(
    not hasattr(__import__("hstu_tutorial.train", fromlist=["x"]), "rank_steps"),
    reason="DistributedDataParallel is not wired into hstu_tutorial.train yet",
)


@needs_ddp
def test_rank_steps_split_every_epoch_evenly():
    from hstu_tutorial.train import rank_steps

    assert rank_steps(5, 0, 1) == [0, 1, 2, 3, 4]
    shares = [rank_steps(7, r, 2) for r in range(2)]
    assert shares == [[0, 2, 4, 6], [1, 3, 5, 0]]  # same count on every rank; the last round wraps
    assert sorted(set(shares[0]) | set(shares[1])) == list(range(7))


def _ddp_worker(rank, world, port, data_dir, out_dir):
    import os

    os.environ.update(
        WORLD_SIZE=str(world),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        OMP_NUM_THREADS="1",
    )
    torch.set_num_threads(1)
    import torch.distributed as dist

    from hstu_tutorial.train import train

    res = train(
        "synthetic/hstu-small",
        verbose=False,
        data_dir=data_dir,
        device="cpu",
        num_epochs=1,
        max_seq_len=20,
        embedding_dim=16,
        dqk=16,
        dv=16,
        num_negatives=16,
        tensorboard=False,
        progress=False,
        save_checkpoints=False,
        exp_dir=out_dir,
        timestamp_run_dir=False,
    )
    tr = res["trainer"]
    flat = torch.cat([p.detach().reshape(-1) for p in tr.model.parameters()])
    every = [torch.empty_like(flat) for _ in range(world)]
    dist.all_gather(every, flat)
    torch.save(
        {
            "rank": tr.rank,
            "world": tr.world,
            "same": all(torch.equal(every[0], f) for f in every),
            "steps": tr.global_step,
            "test": res["history"][-1]["test"],
        },
        f"{out_dir}/rank{rank}.pt",
    )
    dist.destroy_process_group()


@needs_ddp
def test_ddp_on_two_cpu_processes_keeps_ranks_in_step(tmp_path, dataset):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:  # a free port for the rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    data_dir = str(dataset.folder)
    mp.spawn(_ddp_worker, args=(2, port, data_dir, str(tmp_path)), nprocs=2, join=True)
    out = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    assert [o["rank"] for o in out] == [0, 1] and all(o["world"] == 2 for o in out)
    assert all(o["same"] for o in out)  # gradients all-reduced: identical weights on every rank
    users = len(dataset.train)
    num_steps = math.ceil(users / 32)
    assert out[0]["steps"] == math.ceil(num_steps / 2)  # each rank ran half of the epoch's steps
    assert out[0]["test"] == out[1]["test"]  # evaluated once, shared
    assert (tmp_path / "synthetic-l20" / "hstu-small" / "results.json").exists()  # written by rank 0
