"""Short auto-graded quizzes for the checklist's concept items; passing one ticks its item.

    from hstu_tutorial.quizzes import quiz
    quiz("core.hstu")                  # in JupyterLab: radio buttons and a "Check answers" button
    print(quiz("core.hstu"))           # anywhere: the questions as text, options numbered 0, 1, 2, ...
    quiz("core.hstu").answer([1, 2, 0, 3])   # grade in code (no widgets, no input()): True when all right

Every wrong choice is answered with why it is wrong; a right one with why it is right. The answers are
not printed: a quiz passes only when every question is answered right, and then it ticks its item of
the learning checklist (`hstu_tutorial.progress`, `by="quiz"`). The questions are in
`hstu_tutorial.quiz_bank`.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

from hstu_tutorial import progress
from hstu_tutorial.quiz_bank import QUIZZES, Question

LETTERS = "abcdefgh"
last_report: str = ""  # the text of the last graded answer


def quiz(item_id: str, path: str | Path | None = None) -> Quiz:
    """The quiz of a concept item (`basics.recsys`, `basics.transformer`, `basics.sequence_modeling`,
    `core.hstu`, `advanced.paper`). `path`: the progress file (default: `progress.progress_path()`)."""
    if item_id not in QUIZZES:
        raise KeyError(
            f"no quiz for {item_id!r}: the concept items with a quiz are {sorted(QUIZZES)}; the "
            "other items are ticked by exercise checks or runs (see progress.checklist())."
        )
    return Quiz(item_id, QUIZZES[item_id], path)


def _choice_index(choice, q_number: int, question: Question) -> int:
    """0-based option index from an int (0, 1, ...) or a letter ('a', 'b', ...)."""
    n = len(question.options)
    if isinstance(choice, str) and len(choice.strip()) == 1 and choice.strip().lower() in LETTERS[:n]:
        return LETTERS.index(choice.strip().lower())
    if isinstance(choice, int) and not isinstance(choice, bool) and 0 <= choice < n:
        return choice
    raise ValueError(
        f"question {q_number}: {choice!r} is not one of its options; give an index 0..{n - 1} "
        f"or a letter a..{LETTERS[n - 1]}."
    )


class Quiz:
    """A few multiple-choice questions about one checklist item; `answer(...)` grades and ticks."""

    def __init__(self, item_id: str, questions: Sequence[Question], path: str | Path | None = None):
        self.item_id = item_id
        self.questions = tuple(questions)
        self.path = path
        self._widget = None

    @property
    def title(self) -> str:
        it = progress.item(self.item_id)
        return f"Quiz · {it.zh} · {it.en}"

    # ---- grading ---------------------------------------------------------------------------------------

    def grade(self, choices: Sequence) -> tuple[bool, list[str]]:
        """(all right, one feedback line per question). Raises ValueError for a malformed answer."""
        if isinstance(choices, str | bytes) or len(choices) != len(self.questions):
            got = len(choices) if not isinstance(choices, str | bytes) else repr(choices)
            raise ValueError(
                f"{self.item_id}: give one choice per question, {len(self.questions)} in all "
                f"(a list such as [0, 2, 1, ...]); got {got}."
            )
        lines, right = [], 0
        for number, (q, choice) in enumerate(zip(self.questions, choices), start=1):
            k = _choice_index(choice, number, q)
            ok = k == q.answer
            right += ok
            mark = "✓" if ok else "✗"
            lines.append(
                f'{mark} {number}. you chose {k} ({LETTERS[k]}) "{q.options[k].text}": {q.options[k].why}'
            )
        return right == len(self.questions), lines

    def answer(self, choices: Sequence) -> bool:
        """Grade `choices` (one per question: 0-based index or letter), print the feedback, and tick the
        checklist item when every answer is right. Returns True when the quiz is passed."""
        global last_report
        passed, lines = self.grade(choices)
        right = sum(line.startswith("✓") for line in lines)
        if passed:
            ticked = progress.mark_done(self.item_id, self.path, by="quiz")
            head = f"✓ quiz {self.item_id}: all {len(lines)} right; checklist: ticked {', '.join(ticked)}"
        else:
            head = (
                f"✗ quiz {self.item_id}: {right} of {len(lines)} right. Read why, then answer again "
                "(nothing is ticked until all are right)."
            )
        last_report = "\n".join([head, *lines])
        print(last_report)
        return passed

    # ---- showing ---------------------------------------------------------------------------------------

    def text(self) -> str:
        """The questions and numbered options as plain text (no answers)."""
        out = [self.title]
        for number, q in enumerate(self.questions, start=1):
            out.append(f"{number}. {q.prompt}")
            out += [f"   {k} ({LETTERS[k]}) {opt.text}" for k, opt in enumerate(q.options)]
        out.append(f'answer with quiz("{self.item_id}").answer([...]), one option number per question')
        return "\n".join(out)

    __str__ = text

    def __repr__(self) -> str:
        return self.text()

    def html(self) -> str:
        """The questions as static HTML (class `hstu-quiz-static`), for a saved notebook."""
        parts = [f'<div class="hstu-quiz-static"><b>{html.escape(self.title)}</b><ol>']
        for q in self.questions:
            opts = "".join(
                f"<li>{k} ({LETTERS[k]}) {html.escape(o.text)}</li>" for k, o in enumerate(q.options)
            )
            parts.append(f'<li>{html.escape(q.prompt)}<ul style="list-style:none">{opts}</ul></li>')
        parts.append(
            f"</ol><small>Run the cell to answer here, or in code: "
            f'<code>quiz("{html.escape(self.item_id)}").answer([...])</code></small></div>'
        )
        return "".join(parts)

    def widget(self):
        """An ipywidgets form: one radio group per question, a button, the feedback under it."""
        import ipywidgets as w

        radios, rows = [], [w.HTML(f"<b>{html.escape(self.title)}</b>")]
        for number, q in enumerate(self.questions, start=1):
            rows.append(w.HTML(f"{number}. {html.escape(q.prompt)}"))
            radio = w.RadioButtons(
                options=[(f"({LETTERS[k]}) {o.text}", k) for k, o in enumerate(q.options)],
                value=None,
                layout=w.Layout(width="auto"),
            )
            radio.add_class("hstu-quiz-question")
            radios.append(radio)
            rows.append(radio)
        button = w.Button(description="Check answers", button_style="primary")
        button.add_class("hstu-quiz-submit")
        feedback = w.HTML()
        feedback.add_class("hstu-quiz-feedback")

        def on_click(_):
            missing = [str(i) for i, r in enumerate(radios, start=1) if r.value is None]
            if missing:
                feedback.value = f"Answer every question first (no choice yet for {', '.join(missing)})."
                return
            passed, lines = self.grade([r.value for r in radios])
            if passed:
                ticked = progress.mark_done(self.item_id, self.path, by="quiz")
                head = f"✓ all right; checklist: ticked {', '.join(ticked)}"
            else:
                right = sum(line.startswith("✓") for line in lines)
                head = f"✗ {right} of {len(lines)} right: read why, change your answers and check again."
            feedback.value = "<br>".join(html.escape(x) for x in [head, *lines])

        button.on_click(on_click)
        box = w.VBox([*rows, button, feedback])
        box.add_class("hstu-quiz")
        box.radios, box.button, box.feedback = radios, button, feedback  # for tests
        return box

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict:
        """The widget in a live kernel, plus static HTML and text that a saved notebook keeps."""
        bundle = {"text/plain": self.text(), "text/html": self.html()}
        if _in_kernel():
            try:
                self._widget = self.widget()
            except ImportError:
                return bundle
            view = self._widget._repr_mimebundle_()
            view.update(bundle)  # JupyterLab prefers the widget view; other viewers take the HTML
            return view
        return bundle


def _in_kernel() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None
