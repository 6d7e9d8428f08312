"""Showing the checklist: plain text, and an HTML table that a saved notebook keeps.

`checklist()` returns a display object. In Jupyter it is shown as an HTML table (groups, items in the
card's Chinese and in English, where each is taught, what ticks it, and the ticks), saved in the notebook
as `text/html` with a `text/plain` twin, so a notebook that has not been run (GitHub, nbviewer, a fresh
JupyterLab) shows the table, never a raw widget repr. There are no checkboxes: ticks come from checks,
quizzes and runs. While the kernel lives, every tick redraws the tables already shown (`refresh`).
"""

from __future__ import annotations

import html
import uuid
from pathlib import Path

from hstu_tutorial.progress.items import GROUPS, ITEMS, Item, Section, Step
from hstu_tutorial.progress.store import is_done, load, progress_path, ticked_by

_SHOWN: list[tuple[str, str | Path | None]] = []  # (display id, progress path) of tables shown in this kernel


def _where(taught: tuple[Section, ...]) -> str:
    return "; ".join(f"{nb.rsplit('/', 1)[-1]} § {section}" for nb, section in taught)


def checklist_text(state: dict | None = None) -> str:
    """The checklist as plain text: `[x]` done, `[ ]` to do; where each item is taught and what ticks it."""
    state = state if state is not None else load()
    lines = []
    for key, (zh, en) in GROUPS.items():
        group = [it for it in ITEMS if it.group == key]
        done = sum(is_done(it.id, state) for it in group)
        lines.append(f"{zh} {en} ({done}/{len(group)})")
        for it in group:
            mark = "x" if is_done(it.id, state) else " "
            lines.append(f"  [{mark}] {it.zh} · {it.en}  [{it.id}]")
            lines.append(f"        taught: {_where(it.taught)}")
            lines.append(f"        ticked by: {it.ticked_by}")
            for st in it.steps:
                smark = "x" if is_done(st.id, state) else " "
                lines.append(f"      [{smark}] {st.en}  [{st.id}] <- {st.ticked_by}")
    return "\n".join(lines)


def _href(notebook: str, section: str) -> str:
    """A link from notebooks/ (where the overview lives) to a notebook's section (JupyterLab's anchors)."""
    folder, name = notebook.rsplit("/", 1)
    rel = f"{name}.ipynb" if folder == "notebooks" else f"../{folder}/{name}.ipynb"
    return f"{rel}#{section.replace(' ', '-')}"


def _links(taught: tuple[Section, ...]) -> str:
    return "<br>".join(
        f'<a href="{html.escape(_href(nb, sec))}">{html.escape(nb.rsplit("/", 1)[-1])}</a> '
        f"§ {html.escape(sec)}"
        for nb, sec in taught
    )


def _mark(x: Item | Step, state: dict) -> str:
    by = ticked_by(x.id, state)
    if by is None:
        return '<span title="not yet">☐</span>'
    return f'<span title="ticked by {html.escape(by)}">✅</span>'


def checklist_html(state: dict | None = None, path: str | Path | None = None) -> str:
    """The checklist as an HTML table (class `hstu-checklist`): one row per item, steps indented under it."""
    state = state if state is not None else load(path)
    rows = []
    for key, (zh, en) in GROUPS.items():
        group = [it for it in ITEMS if it.group == key]
        done = sum(is_done(it.id, state) for it in group)
        rows.append(
            f'<tr class="hstu-checklist-group"><th colspan="5" style="text-align:left">{zh} · {en} '
            f"&nbsp; {done}/{len(group)}</th></tr>"
        )
        for it in group:
            rows.append(
                f'<tr class="hstu-checklist-item" data-id="{it.id}" data-done="{int(is_done(it.id, state))}">'
                f"<td>{_mark(it, state)}</td><td>{html.escape(it.zh)}</td>"
                f"<td>{html.escape(it.en)}<br><small><code>{it.id}</code></small></td>"
                f"<td><small>{_links(it.taught)}</small></td><td><small>{html.escape(it.ticked_by)}</small></td>"
                "</tr>"
            )
            for st in it.steps:
                rows.append(
                    f'<tr class="hstu-checklist-step" data-id="{st.id}" '
                    f'data-done="{int(is_done(st.id, state))}">'
                    f'<td style="text-align:right">{_mark(st, state)}</td><td></td>'
                    f"<td><small>↳ {html.escape(st.en)} <code>{st.id.rsplit('.', 1)[-1]}</code></small></td>"
                    f"<td><small>{_links(st.taught)}</small></td><td><small>{html.escape(st.ticked_by)}</small>"
                    "</td></tr>"
                )
    where = Path(path) if path is not None else progress_path()
    body = "".join(rows).replace("<td>", '<td style="text-align:left">')  # JupyterLab right-aligns cells
    return (
        '<div class="hstu-checklist"><table>'
        "<thead><tr><th></th><th>中文</th><th>English</th><th>taught in</th><th>ticked by</th></tr>"
        "</thead>"
        f"<tbody>{body}</tbody></table>"
        f"<small>saved in <code>{html.escape(_display_path(where))}</code></small></div>"
    )


class Checklist:
    """The checklist as a display object: HTML in Jupyter (saved with the notebook), text elsewhere."""

    def __init__(self, path: str | Path | None = None):
        self.path = path

    def _bundle(self) -> dict:
        state = load(self.path)
        return {"text/html": checklist_html(state, self.path), "text/plain": checklist_text(state)}

    def _repr_html_(self) -> str:
        return checklist_html(path=self.path)

    def __repr__(self) -> str:
        return checklist_text(load(self.path))

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display_id = f"hstu-checklist-{uuid.uuid4().hex}"
        display(self._bundle(), raw=True, display_id=display_id)
        if _in_kernel():
            _SHOWN.append((display_id, self.path))


def _in_kernel() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def refresh() -> None:
    """Redraw every checklist table shown in this kernel with the saved state (after a tick)."""
    if not _SHOWN or not _in_kernel():
        return
    from IPython.display import update_display

    for display_id, path in _SHOWN:
        try:
            update_display(Checklist(path)._bundle(), raw=True, display_id=display_id)
        except Exception:  # noqa: BLE001 - a redraw must never turn a passed check into an error
            pass


def checklist(path: str | Path | None = None) -> Checklist:
    """The checklist to show in a notebook (the last line of a cell), or to print as text."""
    return Checklist(path)


def show_checklist(path: str | Path | None = None) -> str:
    """Print the checklist as text (works without Jupyter) and return the text."""
    text = checklist_text(load(path))
    print(text)
    where = _display_path(Path(path) if path else progress_path())
    print(
        f"(saved in {where}; checks, quizzes and runs tick the items: "
        "hstu_tutorial.quizzes.quiz('<item id>') for the concept items)"
    )
    return text


def checklist_widget(path: str | Path | None = None) -> Checklist:
    """Kept for old notebooks: the checklist is now a read-only display, `checklist()`."""
    return Checklist(path)


def _display_path(path) -> str:
    from hstu_tutorial.data.paths import display_path  # lazily: the data package is heavier than this module

    return display_path(path)
