"""The learning checklist: the card's 4 groups and 17 items, what ticks each, where it is saved, how shown.

* `items`: the items (Chinese and English), their steps, where each is taught, what ticks it, and the map
  from the earlier checklist's ids (`MIGRATION`).
* `store`: the JSON file (`~/.hstu_tutorial/progress.json`, or `$HSTU_PROGRESS_FILE`), atomic writes,
  recovery from a damaged file, migration of an old one; `mark_done`, `tick`, `is_done`.
* `display`: the checklist as text and as an HTML table that a saved notebook keeps.
* `hooks`: ticks from the data loader and the training CLI.

Nothing is ticked by hand: exercise checks (`hstu_tutorial.checks`), quizzes (`hstu_tutorial.quizzes`),
a verified data set and a completed training run do it.
"""

from hstu_tutorial.progress.display import (
    Checklist,
    checklist,
    checklist_html,
    checklist_text,
    checklist_widget,
    show_checklist,
)
from hstu_tutorial.progress.items import (
    GROUPS,
    ITEMS,
    MIGRATION,
    Item,
    Step,
    all_ids,
    item,
    items_for_check,
    parent,
    resolve,
)
from hstu_tutorial.progress.store import (
    FORMAT_VERSION,
    ProgressFileError,
    is_done,
    load,
    mark_done,
    progress_path,
    reset,
    save,
    summary,
    tick,
    ticked_by,
)

__all__ = [
    "FORMAT_VERSION",
    "GROUPS",
    "ITEMS",
    "MIGRATION",
    "Checklist",
    "Item",
    "ProgressFileError",
    "Step",
    "all_ids",
    "checklist",
    "checklist_html",
    "checklist_text",
    "checklist_widget",
    "is_done",
    "item",
    "items_for_check",
    "load",
    "mark_done",
    "parent",
    "progress_path",
    "reset",
    "resolve",
    "save",
    "show_checklist",
    "summary",
    "tick",
    "ticked_by",
]
