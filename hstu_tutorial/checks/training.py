"""Checks of exercise 06 (training): the sampled softmax loss, HR@K and NDCG@K."""

# The known-mistake variants are lambdas built inside loops and evaluated in the same iteration (by
# `_diagnose`), so the late binding ruff's B023 warns about cannot bite here.
# ruff: noqa: B023

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ._common import (
    CheckFailed,
    _call,
    _case_text,
    _check_tensor,
    _close,
    _diagnose,
    _fmt_val,
    _grads_match,
    _matches,
    _reference,
    _run,
)


def check_sampled_softmax_loss(fn: Callable) -> bool:
    """Check `fn(query, positive_ids, negative_ids, item_table, temperature=0.05) -> loss ()`:
    query `(M, D)`, positive_ids `(M,)`, negative_ids `(M, R)` raw item ids, item_table `(num_items+1, D)`
    (row = item id). L2-normalise query and item embeddings, logits = cosine / temperature, drop negatives
    equal to the positive, loss = mean over rows of -log softmax(positive among [positive, negatives]).
    """

    def body(fn):
        sampled_softmax_loss = _reference("hstu_tutorial.losses", "sampled_softmax_loss")
        cases = [
            ("random", 16, 8, 30, 12),
            ("one row (M = 1)", 1, 8, 30, 5),
            ("one negative (R = 1)", 10, 4, 20, 1),
            ("a tiny catalogue: many accidental hits", 12, 6, 4, 16),
        ]
        for seed, (label, M, D, C, R) in enumerate(cases):
            g = torch.Generator().manual_seed(400 + seed)
            table = torch.randn(C + 1, D, generator=g, dtype=torch.float64) * 3  # not normalised on purpose
            query = torch.randn(M, D, generator=g, dtype=torch.float64) * 2
            pos = torch.randint(1, C + 1, (M,), generator=g)
            neg = torch.randint(1, C + 1, (M, R), generator=g)
            if R > 1:
                neg[0, 0] = pos[0]  # at least one accidental hit
            tau = 0.05 if seed % 2 == 0 else 0.2
            catalogue = torch.arange(1, C + 1)
            ref = lambda q=query, t=table, tau=tau, negs=neg: sampled_softmax_loss(
                q, pos, lambda ids: t[ids], catalogue, temperature=tau, negatives=negs - 1
            )
            expected = ref()
            ct = _case_text(case=label, M=M, D=D, R=R, temperature=tau)
            got = _call(
                fn,
                {"query": query, "positive_ids": pos, "negative_ids": neg, "item_table": table},
                {"temperature": tau},
                ct,
            )
            if isinstance(got, float):
                raise CheckFailed(
                    "you returned a Python float (.item()?): return the scalar tensor, so that "
                    "the loss can be backpropagated." + ct
                )
            if isinstance(got, torch.Tensor) and got.dim() == 1 and got.shape[0] == M:
                raise CheckFailed(
                    f"you returned one loss per row, shape {tuple(got.shape)}; return their "
                    "mean "
                    "(a scalar)." + ct
                )
            got = _check_tensor(got, "the loss", expected)
            naive = lambda **kw: _ssm_naive(query, pos, neg, table, tau, **kw)
            _diagnose(
                got,
                expected,
                "the loss",
                None,
                None,
                variants=[
                    (
                        "the embeddings are not L2-normalised: normalise the query and every item embedding "
                        "(F.normalize(x, dim=-1)) so that scores are cosines.",
                        lambda: naive(normalize=False),
                    ),
                    (
                        "only the query is L2-normalised: normalise the item embeddings too.",
                        lambda: naive(normalize="query"),
                    ),
                    (
                        "only the item embeddings are L2-normalised: normalise the query too.",
                        lambda: naive(normalize="items"),
                    ),
                    (
                        "the temperature is missing: divide the cosines by the temperature.",
                        lambda: naive(temp="none"),
                    ),
                    ("the temperature multiplies the cosines; divide by it.", lambda: naive(temp="mul")),
                    (
                        "accidental hits are not masked: a negative equal to the positive must be left out of the "
                        "softmax (set its logit to -inf).",
                        lambda: naive(mask_hits=False),
                    ),
                    ("you summed the per-row losses; take their mean.", lambda: naive(reduce="sum")),
                    (
                        "the softmax excludes the positive: normalise over [positive, negatives] together.",
                        lambda: naive(include_pos=False),
                    ),
                ],
                atol=1e-6,
                rtol=1e-6,
                case=ct,
            )
        # gradients
        g = torch.Generator().manual_seed(7)
        table = torch.randn(21, 6, generator=g, dtype=torch.float64)
        query = torch.randn(9, 6, generator=g, dtype=torch.float64)
        pos, neg = torch.randint(1, 21, (9,), generator=g), torch.randint(1, 21, (9, 5), generator=g)
        ours = {"query": query.clone().requires_grad_(), "item_table": table.clone().requires_grad_()}
        theirs = {"query": query.clone().requires_grad_(), "item_table": table.clone().requires_grad_()}
        got = fn(ours["query"], pos, neg, ours["item_table"], temperature=0.05)
        ref = sampled_softmax_loss(
            theirs["query"],
            pos,
            lambda ids: theirs["item_table"][ids],
            torch.arange(1, 21),
            temperature=0.05,
            negatives=neg - 1,
        )
        _grads_match(got, ref, ours, theirs, None, _case_text(case="gradients"))
        return len(cases) + 1

    return _run("check_sampled_softmax_loss", fn, body)


def _ssm_naive(
    query, pos, neg, table, tau, normalize="both", temp="div", mask_hits=True, reduce="mean", include_pos=True
):
    q, p, n = query, table[pos], table[neg]  # (M, D), (M, D), (M, R, D)
    if normalize in ("both", "query"):
        q = F.normalize(q, dim=-1)
    if normalize in ("both", "items"):
        p, n = F.normalize(p, dim=-1), F.normalize(n, dim=-1)
    pl = (q * p).sum(-1, keepdim=True)  # (M, 1)
    nl = torch.einsum("md,mrd->mr", q, n)  # (M, R)
    if mask_hits:
        nl = nl.masked_fill(neg == pos[:, None], float("-inf"))
    logits = torch.cat([pl, nl], 1)
    logits = logits / tau if temp == "div" else (logits * tau if temp == "mul" else logits)
    if include_pos:
        per_row = -torch.log_softmax(logits, 1)[:, 0]
    else:
        per_row = -(logits[:, 0] - torch.logsumexp(logits[:, 1:], 1))
    return per_row.sum() if reduce == "sum" else per_row.mean()


def _rank_case(B, C, N, K, ranks, seed):
    """Scores, targets and histories built so that user b's target has exactly rank ranks[b]."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(B, C + 1, generator=g, dtype=torch.float64)  # distinct scores
    scores[:, 0] = torch.where(torch.arange(B) % 2 == 0, 50.0, -50.0)
    history = torch.stack([torch.randperm(C, generator=g)[:N] + 1 for _ in range(B)])  # (B, N)
    targets = torch.empty(B, dtype=torch.int64)
    for b in range(B):
        unseen = [i for i in range(1, C + 1) if i not in set(history[b].tolist())]
        unseen.sort(key=lambda i: -float(scores[b, i]))
        targets[b] = unseen[ranks[b] - 1]
    return scores, targets, history


def _random_case(label, B, C, N, seed):
    g = torch.Generator().manual_seed(seed)
    if "ties" in label:
        scores = torch.randint(0, 4, (B, C + 1), generator=g).double()
    else:
        scores = torch.randn(B, C + 1, generator=g, dtype=torch.float64)
    # the padding column: a trap for code that ranks it (only every other row, so that this mistake
    # and an off-by-one in NDCG give different numbers)
    scores[:, 0] = torch.where(torch.arange(B) % 2 == 0, 50.0, -50.0)
    targets = torch.randint(1, C + 1, (B,), generator=g)
    history = torch.randint(1, C + 1, (B, N), generator=g) if N else torch.zeros(B, 1, dtype=torch.int64)
    if N > 1:
        history[:, -1] = 0  # some padding in the histories
        history[history == targets[:, None]] = 0
    if "already" in label:
        history[0, 0] = targets[0]
    return scores, targets, history


def check_hr_ndcg(fn: Callable) -> bool:
    """Check `fn(scores, target_ids, history_ids, k) -> (hr, ndcg)`: scores `(B, C+1)` (column = item id;
    column 0 is padding, never a candidate), target_ids `(B,)`, history_ids `(B, N)` zero-padded items to
    remove from the ranking; returns per-user `hr (B,)` and `ndcg (B,)` floats. rank = 1 + number of unseen
    items scored strictly higher than the target; HR@K = [rank <= K]; NDCG@K = [rank <= K] / log2(rank + 1);
    a target inside the history counts as a miss.
    """

    def body(fn):
        target_ranks = _reference("hstu_tutorial.metrics", "target_ranks")
        cases = [
            ("random", 8, 40, 6, 10, None),
            ("one user", 1, 20, 3, 5, None),
            ("K = 1", 6, 30, 4, 1, None),
            ("targets exactly at ranks K-1, K, K+1", 8, 30, 4, 5, [1, 4, 5, 6, 7, 5, 6, 2]),
            ("K = 1, targets at ranks 1, 2, 3", 5, 12, 3, 1, [2, 1, 2, 3, 1]),
            ("ties in the scores", 10, 25, 5, 10, None),
            ("empty histories", 5, 30, 0, 10, None),
            ("a target already in its history", 4, 15, 4, 10, None),
        ]
        for seed, (label, B, C, N, K, want_ranks) in enumerate(cases):
            if want_ranks:
                scores, targets, history = _rank_case(B, C, N, K, want_ranks, 500 + seed)
            else:
                scores, targets, history = _random_case(label, B, C, N, 500 + seed)
            catalogue = torch.arange(1, C + 1)
            ranks = target_ranks(scores[:, 1:].float(), torch.eye(C), catalogue, targets, history, C).double()
            hr_ref = (ranks <= K).double()
            ndcg_ref = torch.where(ranks <= K, 1.0 / torch.log2(ranks + 1.0), 0.0)
            ct = _case_text(case=label, B=B, C=C, K=K)
            got = _call(
                fn, {"scores": scores, "target_ids": targets, "history_ids": history, "k": K}, case=ct
            )
            if not (isinstance(got, tuple | list) and len(got) == 2):
                raise CheckFailed(f"return a pair (hr, ndcg) of (B,) tensors, got {type(got).__name__}." + ct)
            hr, ndcg = got
            for what, x in (("hr", hr), ("ndcg", ndcg)):
                if isinstance(x, int | float) or (hasattr(x, "dim") and x.dim() == 0 and B > 1):
                    raise CheckFailed(
                        f"{what} is one number: you averaged over users. Return one value per "
                        f"user, shape ({B},); the mean comes later." + ct
                    )
            hr = _check_tensor(hr, "hr", hr_ref, ("B",))
            ndcg = _check_tensor(ndcg, "ndcg", ndcg_ref, ("B",))
            _check_hr_values(
                hr, ndcg, hr_ref, ndcg_ref, ranks, scores, targets, history, catalogue, target_ranks, K, ct
            )
        return len(cases)

    return _run("check_hr_ndcg", fn, body)


def _check_hr_values(
    hr, ndcg, hr_ref, ndcg_ref, ranks, scores, targets, history, catalogue, target_ranks, K, ct
):
    """Name the mistake when hr / ndcg differ, else quote the first wrong user and its rank."""
    close = lambda a, b: _matches(a, b, atol=1e-6, rtol=1e-6)
    if close(hr, hr_ref) and close(ndcg, ndcg_ref):
        return
    C = scores.shape[1] - 1
    per_user = lambda r: ((r <= K).double(), torch.where(r <= K, 1.0 / torch.log2(r + 1.0), 0.0))
    unfiltered = target_ranks(scores[:, 1:].float(), torch.eye(C), catalogue, targets).double()
    s = scores.clone()
    s[:, 0] = float("-inf")
    s = s.scatter(1, history, float("-inf"))
    s[:, 0] = float("-inf")
    own = 1.0 + (s > scores.gather(1, targets[:, None])).sum(1).double()  # seen targets ranked normally
    pad_ranked = ranks + (scores[:, :1] > scores.gather(1, targets[:, None])).double()[:, 0]
    zero_based = ranks - 1
    strict, plus = ranks < K, ranks <= K + 1
    variants = [
        (
            "the items already in the history were not removed: set their scores to -inf before "
            "ranking (a seen item cannot be recommended again).",
            per_user(unfiltered),
        ),
        (
            "ties: count only items scored *strictly* higher than the target (rank = 1 + #{s > s_t}).",
            per_user(_ranks_ge(scores, targets, history)),
        ),
        (
            "the padding column 0 was ranked as an item: exclude column 0 (it is no item).",
            per_user(pad_ranked),
        ),
        (
            "a target inside the history must count as a miss (HR 0, NDCG 0): once the history is removed, the "
            "target is not among the candidates.",
            per_user(own),
        ),
        (
            "NDCG uses log2: 1 / log2(rank + 1) with 1-based ranks (you used the natural log).",
            (hr_ref, torch.where(ranks <= K, 1.0 / torch.log(ranks + 1.0), 0.0)),
        ),
        (
            "off by one in NDCG: with 1-based ranks it is 1 / log2(rank + 1) (rank 1 scores 1).",
            (hr_ref, torch.where(ranks <= K, 1.0 / torch.log2(ranks + 2.0), 0.0)),
        ),
        (
            "0-based ranks in NDCG: 1 / log2(rank + 1) needs the 1-based rank (rank 1 scores 1, not 1/0).",
            (hr_ref, torch.where(ranks <= K, 1.0 / torch.log2(zero_based + 1.0), 0.0)),
        ),
        (
            "NDCG@K is 0 when rank > K: you gave 1 / log2(rank + 1) to every user, also the misses.",
            (hr_ref, 1.0 / torch.log2(ranks + 1.0)),
        ),
        (
            "HR@K counts rank <= K (1-based): you used rank < K, so a target at rank exactly K is missed.",
            (strict.double(), torch.where(strict, 1.0 / torch.log2(ranks + 1.0), 0.0)),
        ),
        (
            "HR@K counts rank <= K (1-based): you also counted rank K + 1 as a hit.",
            (plus.double(), torch.where(plus, 1.0 / torch.log2(ranks + 1.0), 0.0)),
        ),
        (
            "0-based ranks: with rank = #{higher} (starting at 0), a hit is rank < K and NDCG is "
            "1 / log2(rank + 2); you counted rank K + 1 as a hit and scored rank 1 as 1 / log2(1).",
            per_user(ranks - 1),
        ),
        (
            "HR@K counts rank <= K (1-based): you used rank < K, so a target at rank exactly K is missed.",
            (strict.double(), ndcg_ref),
        ),
        ("HR@K counts rank <= K (1-based): you also counted rank K + 1 as a hit.", (plus.double(), ndcg_ref)),
    ]
    for vmsg, (vh, vn) in variants:
        if close(hr, vh) and close(ndcg, vn):
            raise CheckFailed(vmsg + ct)
    bad = _close(hr, hr_ref, atol=1e-6, rtol=1e-6) | _close(ndcg, ndcg_ref, atol=1e-6, rtol=1e-6)
    b = int(bad.nonzero()[0, 0])
    seen = " (the target is in this user's history: a miss)" if int(ranks[b]) > C else ""
    rank = f"rank {int(ranks[b])}" if not seen else "no rank"
    raise CheckFailed(
        f"user b={b}: the target has {rank} with K = {K}{seen}, so HR@K = {_fmt_val(hr_ref[b])} and "
        f"NDCG@K = {_fmt_val(ndcg_ref[b])}; you returned hr {_fmt_val(hr[b])}, ndcg {_fmt_val(ndcg[b])} "
        f"({int(bad.sum())} of {len(bad)} users differ)." + ct
    )


def _ranks_ge(scores, targets, history):
    """Pessimistic ranks (ties counted as above the target), seen items removed, column 0 excluded."""
    s = scores.clone()
    s[:, 0] = float("-inf")
    s.scatter_(1, history, float("-inf"))
    s[:, 0] = float("-inf")
    t = scores.gather(1, targets[:, None])
    seen = (history == targets[:, None]).any(1)
    r = (s >= t).sum(1).double()  # the target itself counts once
    return torch.where(seen, torch.full_like(r, scores.shape[1]), r)
