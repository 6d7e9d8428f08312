"""The questions of the concept quizzes (`hstu_tutorial.quizzes`): one short quiz per concept item.

Every option carries `why`: for the right one, why it is right; for a wrong one, which misconception it
is and why it fails. The wrong options are the usual mistakes (HSTU uses a softmax, the STU has an FFN,
the time bias uses the current item's timestamp, sampled softmax is unbiased, padding is free, ...).
The paper is "Actions Speak Louder than Words" (Zhai et al., ICML 2024, arXiv 2402.17152).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Option:
    text: str
    why: str


@dataclass(frozen=True)
class Question:
    prompt: str
    options: tuple[Option, ...]
    answer: int  # index of the right option


def _q(prompt: str, answer: int, *options: tuple[str, str]) -> Question:
    return Question(prompt, tuple(Option(t, w) for t, w in options), answer)


QUIZZES: dict[str, tuple[Question, ...]] = {
    "basics.recsys": (
        _q(
            "In the leave-one-out evaluation used here, which item of a user's time-sorted history is the "
            "test target?",
            1,
            (
                "A random item of the history.",
                "A random target leaves later actions in the model's input: it is evaluated on predicting the "
                "past from the future, which never happens when it serves recommendations.",
            ),
            (
                "The last item (the second-to-last is the validation target).",
                "Right: the model predicts the most recent action from everything before it, as it would "
                "online.",
            ),
            (
                "The first item.",
                "Nothing comes before the first item: there is no history to predict it from.",
            ),
            (
                "The user's most popular item.",
                "Choosing targets by popularity makes the test easy for a popularity baseline and says little "
                "about what the user does next.",
            ),
        ),
        _q(
            "A model reaches HR@10 = 0.30 with full ranking. What does that mean?",
            2,
            (
                "30% of the 10 items it recommends are relevant.",
                "That is precision@10. Each user has one held-out item, so a top-10 list holds at most one hit.",
            ),
            (
                "It recommends 30% of the catalogue to somebody.",
                "That is catalogue coverage, not a hit rate.",
            ),
            (
                "For 30% of the users, the held-out item is among the 10 highest-scored items of the whole "
                "catalogue.",
                "Right: HR@K is the share of users whose target ranks in the top K of all items.",
            ),
            (
                "It ranks the held-out item 3rd on average.",
                "An average rank is a different metric (MRR is the mean of 1/rank); HR@10 only asks: in the top "
                "10 or not?",
            ),
        ),
        _q(
            "Training scores the user against a few hundred random negatives instead of every item (sampled "
            "softmax). Which statement is true?",
            3,
            (
                "Its loss equals the full softmax loss in expectation: it is unbiased.",
                "The log of a sampled normaliser is not the log of the full one on average: sampled softmax is a "
                "biased estimate of the full softmax loss (the bias shrinks as the number of negatives grows; "
                "non-uniform sampling also needs a log-probability correction).",
            ),
            (
                "Evaluation uses the same sampled negatives, so HR@10 ranks the target among a few hundred "
                "items.",
                "Here evaluation ranks the target against the whole catalogue (full ranking). Metrics against a "
                "small sample of negatives are much higher and not comparable.",
            ),
            (
                "Its scores are calibrated probabilities over all items.",
                "The loss only normalises over the sampled candidates; nothing makes the scores probabilities "
                "over the whole catalogue.",
            ),
            (
                "It is a cheaper, biased approximation of the softmax over the whole catalogue; more negatives "
                "bring it closer.",
                "Right: it trades exactness for a cost that does not grow with the catalogue size.",
            ),
        ),
        _q(
            "Compared with the words a language model reads, the item ids of a recommender form a vocabulary "
            "that is:",
            0,
            (
                "huge and non-stationary: new items appear and old ones fade all the time.",
                "Right: the paper designs HSTU for high-cardinality, non-stationary streaming data.",
            ),
            (
                "fixed, like a tokenizer's vocabulary.",
                "Catalogues change every day; a fixed vocabulary is the assumption the paper argues against.",
            ),
            (
                "small enough that a full softmax over it is always cheap.",
                "Industrial catalogues reach billions of items, where a softmax over every item at every "
                "position is out of reach.",
            ),
        ),
    ),
    "basics.transformer": (
        _q(
            "In softmax attention, the weights one query gives to the keys:",
            2,
            (
                "are independent numbers in [0, 1], one per key.",
                "That describes a pointwise function such as a sigmoid. The softmax couples the weights through "
                "its normaliser: raising one lowers the others.",
            ),
            ("can be negative when q·k is negative.", "exp(x) > 0: softmax weights are always positive."),
            (
                "sum to 1, so ten matching past items share the weight that a single one would get alone.",
                "Right: the softmax keeps the relative preference and loses its intensity; this is what HSTU's "
                "pointwise attention changes.",
            ),
            (
                "sum to the number of keys.",
                "The softmax divides by the sum of the exponentials: the row sums "
                "to 1, whatever the number of keys.",
            ),
        ),
        _q(
            "Why are the dot products q·k divided by √d before the softmax?",
            1,
            ("To make the attention causal.", "Causality comes from the mask (j ≤ i), not from a scale."),
            (
                "To keep their variance near 1 as the head dimension d grows, so that the softmax does not "
                "saturate into a one-hot with vanishing gradients.",
                "Right: for random unit-variance q and k, q·k has variance d.",
            ),
            (
                "To give the output vectors unit length.",
                "Scaling the scores changes the attention weights, not the length of the outputs; that would be "
                "an L2 normalisation.",
            ),
            (
                "Because √d is the number of heads.",
                "The scale is the square root of the per-head dimension; "
                "the number of heads plays no part in it.",
            ),
        ),
        _q(
            "A Transformer block, as in SASRec, consists of:",
            0,
            (
                "softmax self-attention (one or more heads) and a position-wise feed-forward network (FFN), "
                "each with a residual connection and a LayerNorm.",
                "Right: SASRec stacks such blocks over the item sequence.",
            ),
            (
                "attention alone; the FFN is an optional extra.",
                "The FFN holds about two thirds of a standard block's weights (8d² of 12d² when its hidden size "
                "is 4d) and gives each position its non-linearity.",
            ),
            (
                "a recurrent cell that reads the positions one after the other.",
                "There is no recurrence: all positions are computed in parallel; order comes from positional "
                "embeddings and the causal mask.",
            ),
            (
                "convolutions and pooling over neighbouring items.",
                "That is a CNN recommender (e.g. Caser), not a Transformer.",
            ),
        ),
        _q(
            "For next-item prediction, position i of a sequence may attend to:",
            3,
            (
                "every position of the sequence.",
                "Position i would see item i+1, the very item it has to predict: the future leaks and the loss "
                "falls for the wrong reason.",
            ),
            (
                "positions j < i only.",
                "Dropping the diagonal hides the current item, the most recent action; SASRec and HSTU keep it "
                "(j ≤ i).",
            ),
            ("position i-1 only.", "That is a first-order Markov chain; attention reads the whole past."),
            ("positions j ≤ i (a causal mask).", "Right: everything up to and including the current item."),
        ),
    ),
    "basics.sequence_modeling": (
        _q(
            "One pass of a causal encoder over a training history of length N supervises how many "
            "next-item predictions?",
            1,
            (
                "One, at the last position.",
                "Every position predicts its next item; the causal mask keeps each from seeing it, so all N "
                "predictions train at once.",
            ),
            ("N, one per position.", "Right: position i predicts item i+1, the last position the target."),
            (
                "N², one per pair of positions.",
                "Attention scores pairs of positions, but the supervision is one next item per position.",
            ),
            ("N / 2.", "No rule halves the positions: each one has a next item to predict."),
        ),
        _q(
            "For a user with time-sorted items s[0], ..., s[L-1], the test example of the leave-one-out split "
            "is:",
            2,
            (
                "history s[0..L-1], target s[L-1].",
                "The target is inside its own input: the model can copy it and the metric means nothing.",
            ),
            (
                "a random item as target, the others as history.",
                "Later actions then sit in the input of an earlier target: the future leaks.",
            ),
            (
                "history s[0..L-2], target s[L-1].",
                "Right: the validation example is history s[0..L-3], target s[L-2].",
            ),
            ("history s[1..L-1], target s[0].", "That predicts the past from the future."),
        ),
        _q(
            "Why are a user's actions sorted by timestamp with a stable sort?",
            0,
            (
                "Actions with the same timestamp keep their file order, so sequences are reproducible and match "
                "the reference implementation.",
                "Right: MovieLens timestamps are in seconds and users rate many movies within the same second.",
            ),
            ("A stable sort is faster.", "It is not faster; it is chosen for the order of ties."),
            (
                "Timestamps are unique per user, so any sort gives the same order.",
                "They are not: many ratings of one user share a second, and an unstable sort may order them "
                "differently from run to run.",
            ),
        ),
        _q(
            "A batch holds histories of lengths 3, 10 and 200, padded to 200 and masked. What does the "
            "padding cost?",
            3,
            (
                "Nothing: masked positions are skipped.",
                "Padded tensors are computed in full and the masked results thrown away: here 387 of the 600 "
                "rows are padding, and attention's cost grows with the square of the padded length.",
            ),
            (
                "It changes the results, even with a correct mask.",
                "With a correct mask the real positions get exactly the jagged result (notebook 04 checks it).",
            ),
            (
                "Nothing, because Triton kernels require padded inputs anyway.",
                "HSTU's Triton kernel reads the jagged layout directly (values + offsets).",
            ),
            (
                "The same results as a jagged batch, but compute and memory spent on the 387 padding rows; a "
                "jagged layout (values + offsets) avoids them.",
                "Right: notebook 04 measures what the padding costs.",
            ),
        ),
    ),
    "core.hstu": (
        _q(
            "What turns HSTU's attention scores q·k + rab into weights?",
            1,
            (
                "A softmax over the keys, as in a Transformer.",
                "HSTU has no softmax: its rows do not sum to 1, so the intensity of a preference survives.",
            ),
            (
                "SiLU, pointwise, then a division by a constant n (a sequence length), not by a row sum.",
                "Right: A = SiLU(q kᵀ + rab) / n, causal.",
            ),
            (
                "A sigmoid, so that each weight is a probability.",
                "SiLU(x) = x·sigmoid(x) is not bounded to [0, 1]: negative scores give small negative weights.",
            ),
            (
                "A LayerNorm over each row of scores.",
                "The STU's LayerNorm is applied to A·V, the attended values, not to the attention weights.",
            ),
        ),
        _q(
            "Where is the STU layer's feed-forward network (FFN)?",
            2,
            (
                "After the attention, as in a Transformer block.",
                "The STU has no separate FFN sub-layer: after the attention come the gate and one linear layer.",
            ),
            (
                "Inside the attention, applied to q and k.",
                "q and k come from the projection f1; no FFN is applied to them.",
            ),
            (
                "There is none: Y = f2(Norm(A V) ⊙ U) — the gating by U and the output layer f2 take its place.",
                "Right: pointwise projection, spatial aggregation, pointwise transformation.",
            ),
            (
                "Before the projections, on the input embeddings.",
                "The layer starts with f1 and SiLU; nothing precedes them.",
            ),
        ),
        _q(
            "Query position i and key position j: the time part of the relative attention bias is a learned "
            "weight of the log bucket of:",
            0,
            (
                "t[i+1] − t[j]: the gap from the next item's timestamp (at the last position, the target's) to "
                "the key's.",
                "Right: position i predicts item i+1, so the gap is measured from when that item happened.",
            ),
            (
                "t[i] − t[j]: the gap from the query item's own timestamp.",
                "That uses the current item's timestamp; the reference measures from the next item's, the "
                "moment of the prediction.",
            ),
            (
                "t[j] alone, the key's absolute time bucketed by day.",
                "The bias is relative: it depends on a gap, not on a date.",
            ),
            ("j − i alone.", "That is the positional part, pos_w[N−1+j−i]; the time part uses timestamps."),
        ),
        _q(
            "Where do HSTU's U, V, Q and K come from?",
            3,
            ("Four separate linear layers, with a softmax on Q.", "There is one projection and no softmax."),
            (
                "Q and K from a linear layer; U and V are the input X itself.",
                "All four are projections of X: U gates the output, V is what is attended.",
            ),
            ("The previous layer's attention weights.", "They are computed from the layer's input X."),
            (
                "One linear layer f1 followed by SiLU, split into four: U, V, Q, K = Split(SiLU(f1(X))).",
                "Right: paper eq. 1.",
            ),
        ),
    ),
    "advanced.paper": (
        _q(
            "What does the paper reformulate recommendation as?",
            2,
            (
                "Text generation: items described in words and written out by a language model.",
                "The title says it: actions speak louder than words. The model reads sequences of actions (item "
                "ids and their times), not text.",
            ),
            (
                "A classic DLRM with more hand-built features.",
                "The paper starts from the observation that most DLRMs fail to scale with compute.",
            ),
            (
                "Sequential transduction tasks in a generative framework (Generative Recommenders): ranking and "
                "retrieval over the sequence of a user's actions.",
                "Right: the abstract says so in these words.",
            ),
            (
                "A graph problem over the user-item bipartite graph.",
                "Graph models are not the paper's subject; it models each user's action sequence.",
            ),
        ),
        _q(
            "What does the paper report about quality and training compute?",
            0,
            (
                "Quality of Generative Recommenders scales as a power law of training compute across three "
                "orders of magnitude, up to GPT-3 / LLaMa-2 scale.",
                "Right: the paper's scaling-law result, from its abstract.",
            ),
            (
                "Quality saturates early, as for DLRMs.",
                "Saturation is what the paper reports for DLRMs; Generative Recommenders keep improving.",
            ),
            ("Quality does not depend on compute.", "The scaling law says the opposite."),
        ),
        _q(
            "HSTU's speed compared with FlashAttention2-based Transformers, as the paper reports it:",
            1,
            ("About the same speed; HSTU only wins on quality.", "The paper reports a large speed-up."),
            ("5.3x to 15.2x faster on sequences of length 8192.", "Right: the abstract's figures."),
            ("Faster only on short sequences (200 items).", "The claim is made at length 8192."),
            ("Slower, but with more accurate recommendations.", "It is faster as well."),
        ),
        _q(
            "In online A/B tests, the 1.5-trillion-parameter HSTU-based Generative Recommenders improved "
            "metrics by:",
            2,
            (
                "65.8%.",
                "65.8% is the largest NDCG gain over baselines on synthetic and public data sets, not "
                "the online result.",
            ),
            ("1.5%.", "1.5 is the parameter count in trillions, not the gain."),
            ("12.4%.", "Right: the abstract's online A/B result."),
            ("5.3x.", "5.3x is the low end of the speed-up over FlashAttention2-based Transformers."),
        ),
    ),
}
