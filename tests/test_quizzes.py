"""The concept quizzes: their questions, grading with feedback, the widget, and the tick they give."""

from __future__ import annotations

import json

import pytest

from hstu_tutorial import progress, quizzes
from hstu_tutorial.quiz_bank import QUIZZES

CONCEPT_ITEMS = [
    "basics.recsys",
    "basics.transformer",
    "basics.sequence_modeling",
    "core.hstu",
    "advanced.paper",
]


@pytest.fixture()
def pfile(tmp_path, monkeypatch):
    path = tmp_path / "progress.json"
    monkeypatch.setenv("HSTU_PROGRESS_FILE", str(path))
    return path


def key(item_id):
    return [q.answer for q in QUIZZES[item_id]]


def test_every_concept_item_has_a_short_quiz():
    assert sorted(QUIZZES) == sorted(CONCEPT_ITEMS)
    assert sorted(it.id for it in progress.ITEMS if it.quiz) == sorted(CONCEPT_ITEMS)
    for item_id, questions in QUIZZES.items():
        assert 3 <= len(questions) <= 5, item_id
        for q in questions:
            assert 3 <= len(q.options) <= 4 and 0 <= q.answer < len(q.options), q.prompt
            assert len({o.text for o in q.options}) == len(q.options)
            for k, o in enumerate(q.options):
                assert len(o.why) > 15, f"{item_id}: option {o.text!r} is not explained"
                assert o.why.startswith("Right") == (k == q.answer), o.why
        # the right answer is not always in the same place: a constant guess cannot pass
        assert len(set(key(item_id))) > 1, item_id


@pytest.mark.parametrize(
    "item_id, words",
    [
        ("core.hstu", "A softmax over the keys"),  # HSTU uses softmax
        ("core.hstu", "After the attention, as in a Transformer"),  # the STU has an FFN
        ("core.hstu", "query item's own timestamp"),  # the time bias uses the current item's time
        ("basics.recsys", "it is unbiased"),  # sampled softmax is unbiased
        ("basics.sequence_modeling", "Nothing: masked positions are skipped"),  # padding is free
        ("basics.transformer", "positions j < i only"),  # the diagonal dropped
    ],
)
def test_the_usual_misconceptions_are_wrong_options(item_id, words):
    hits = [(q, k) for q in QUIZZES[item_id] for k, o in enumerate(q.options) if words in o.text]
    assert len(hits) == 1, words
    q, k = hits[0]
    assert k != q.answer


@pytest.mark.parametrize("item_id", CONCEPT_ITEMS)
def test_right_answers_pass_and_tick_the_item(pfile, item_id, capsys):
    assert not progress.is_done(item_id)
    assert quizzes.quiz(item_id).answer(key(item_id))
    out = capsys.readouterr().out
    assert out.startswith(f"✓ quiz {item_id}: all {len(QUIZZES[item_id])} right; checklist: ticked {item_id}")
    assert progress.is_done(item_id)
    entry = json.loads(pfile.read_text())["items"][item_id]
    assert entry["done"] is True and entry["by"] == "quiz"


def test_letters_are_accepted(pfile):
    letters = ["abcd"[k] for k in key("core.hstu")]
    assert quizzes.quiz("core.hstu").answer([c.upper() for c in letters])


def test_one_wrong_answer_ticks_nothing_and_explains_that_choice(pfile, capsys):
    answers = key("core.hstu")
    q = QUIZZES["core.hstu"][2]  # the time bias
    wrong = next(k for k in range(len(q.options)) if k != q.answer)
    answers[2] = wrong
    assert not quizzes.quiz("core.hstu").answer(answers)
    out = capsys.readouterr().out
    assert out.startswith("✗ quiz core.hstu: 3 of 4 right")
    assert f"✗ 3. you chose {wrong}" in out and q.options[wrong].why in out
    assert q.options[q.answer].text not in out  # the right answer is not given away
    assert not progress.is_done("core.hstu") and not pfile.exists()
    assert quizzes.last_report == out.rstrip("\n")


@pytest.mark.parametrize(
    "answers, words",
    [
        ([0, 1], "one choice per question, 4 in all"),
        ("1203", "one choice per question"),
        ([0, 1, 2, 7], "question 4: 7 is not one of its options"),
        ([0, 1, 2, "z"], "question 4: 'z' is not one of its options"),
        ([0, 1, 2, True], "question 4: True"),
    ],
)
def test_malformed_answers_say_what_to_give(pfile, answers, words):
    with pytest.raises(ValueError, match=words.replace("(", r"\(")):
        quizzes.quiz("core.hstu").answer(answers)
    assert not pfile.exists()


def test_unknown_quiz_lists_the_quizzes():
    with pytest.raises(KeyError, match="core.jagged.*basics.recsys"):
        quizzes.quiz("core.jagged")


def test_text_shows_questions_without_answers():
    text = str(quizzes.quiz("advanced.paper"))
    assert text.startswith("Quiz · 阅读 HSTU 论文 · Read the HSTU paper")
    assert "0 (a) " in text and 'quiz("advanced.paper").answer([...])' in text
    for q in QUIZZES["advanced.paper"]:
        assert q.prompt in text
        assert all(o.why not in text for o in q.options)


def test_saved_notebook_output_has_static_html():
    """Outside a kernel (nbconvert's saved output, GitHub) the quiz is HTML and text, not a widget repr."""
    bundle = quizzes.quiz("basics.recsys")._repr_mimebundle_()
    assert set(bundle) == {"text/plain", "text/html"}
    assert 'class="hstu-quiz-static"' in bundle["text/html"] and "VBox" not in bundle["text/plain"]


def test_the_widget_grades_and_ticks(pfile):
    pytest.importorskip("ipywidgets")
    form = quizzes.quiz("basics.recsys").widget()
    form.button.click()  # nothing chosen yet
    assert "Answer every question first" in form.feedback.value and not pfile.exists()
    right = key("basics.recsys")
    for radio, k in zip(form.radios, right):
        radio.value = (k + 1) % len(radio.options)  # all wrong
    form.button.click()
    assert "0 of 4 right" in form.feedback.value and not progress.is_done("basics.recsys")
    for radio, k in zip(form.radios, right):
        radio.value = k
    form.button.click()
    assert "✓ all right; checklist: ticked basics.recsys" in form.feedback.value
    assert progress.is_done("basics.recsys")
