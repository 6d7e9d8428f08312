"""The sampled softmax loss of a trained model against the full softmax, and the (C-1)/R rescaling."""

from __future__ import annotations

import math

import torch


def sampled_vs_full(trainer, num_users: int = 32, draws: int = 20, seed: int = 0) -> dict:
    """On `num_users` training histories of a trained model: the full softmax loss, the sampled loss over
    `draws` draws of negatives, and the sampled loss with the negatives' sum rescaled by (C-1)/R."""
    from hstu_tutorial.losses import full_softmax_loss, l2_normalize, sampled_softmax_loss

    cfg, model = trainer.cfg, trainer.model
    cat_ids = trainer.catalogue  # (C,) on the trainer's device
    was_training = model.training
    model.eval()
    with torch.no_grad():
        n_users = min(num_users, trainer.splits["train"].num_users)
        sample = trainer.train_batch(torch.arange(n_users, device=cat_ids.device))
        out = model(sample).float()  # (T, D)
        keep = sample.next_item_ids != 0  # (T,) supervised positions
        q, p = out[keep], sample.next_item_ids[keep]  # (M, D), (M,)
        tau, R, C = cfg.temperature, cfg.num_negatives, len(cat_ids)
        full = full_softmax_loss(q, p, model.item_embeddings, cat_ids, temperature=tau).item()
        qn = l2_normalize(q)
        logits = qn @ model.item_embeddings(cat_ids).T / tau  # (M, C)
        pos = (qn * model.item_embeddings(p)).sum(-1) / tau  # (M,)
        g = torch.Generator().manual_seed(seed)
        sampled, rescaled = [], []
        for _ in range(draws):
            neg = torch.randint(0, C, (len(p), R), generator=g).to(
                cat_ids.device
            )  # (M, R) catalogue positions
            sampled.append(
                sampled_softmax_loss(q, p, model.item_embeddings, cat_ids, R, tau, negatives=neg).item()
            )
            neg_logits = logits.gather(1, neg).masked_fill(
                cat_ids[neg] == p[:, None], float("-inf")
            )  # (M, R)
            scaled = torch.logsumexp(neg_logits, 1) + math.log((C - 1) / R)  # (M,) log of the rescaled sum
            rescaled.append((torch.logaddexp(pos, scaled) - pos).mean().item())
    model.train(was_training)
    st, rt = torch.tensor(sampled), torch.tensor(rescaled)
    return {
        "users": n_users,
        "positions": int(len(p)),
        "catalogue": C,
        "negatives": R,
        "temperature": tau,
        "draws": draws,
        "full": full,
        "sampled_mean": st.mean().item(),
        "sampled_std": st.std().item(),
        "rescaled_mean": rt.mean().item(),
        "rescaled_std": rt.std().item(),
        "sampled": sampled,
        "rescaled": rescaled,
    }
