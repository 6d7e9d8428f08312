"""The learning checklist: what a learner can tick, where it is saved, and how it is shown.

Items come in four groups (basic concepts, core algorithms, practical skills, advanced skills). Some are
ticked by hand (a checkbox in notebook 00); most are also ticked automatically when the exercise check
named in `Item.check` passes (`hstu_tutorial.checks` calls `mark_done`).

The state lives in one small JSON file, `~/.hstu_tutorial/progress.json` (`$HSTU_PROGRESS_FILE`
overrides the path; tests and CI point it at a temporary file):

    {"version": 1, "items": {"core.hstu_attention": {"done": true, "by": "check_hstu_attention",
                                                     "at": "2026-11-28T18:00:00+00:00"}}}

It is written atomically (a temporary file in the same folder, then `os.replace`), so an interrupted
kernel never leaves half a file. A file that cannot be read (corrupted, hand-edited, from a future
version) is reported, kept as a backup `progress.json.bak-<UTC time>-<n>` (a new name each time: a
backup never overwrites an earlier one) and rebuilt empty: the notebook goes on. Where the folder is
read-only, the message says so and how to point `$HSTU_PROGRESS_FILE` somewhere writable.
"""

from __future__ import annotations

import datetime as _dt
import errno
import html
import json
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

from hstu_tutorial.errors import HSTUError

FORMAT_VERSION = 1

GROUPS = {
    "basics": "Basic concepts",
    "core": "Core algorithms",
    "practical": "Practical skills",
    "advanced": "Advanced skills",
}


@dataclass(frozen=True)
class Item:
    """One checklist line. `check` names the `hstu_tutorial.checks` function that ticks it (or None)."""

    id: str
    group: str  # a key of GROUPS
    text: str
    where: str  # the notebook or exercise that teaches it
    check: str | None = None


ITEMS: tuple[Item, ...] = (
    # basic concepts: the ideas, in words
    Item("basics.generative_framing", "basics",
         "Explain the generative-recommender framing: a user's actions form a sequence and the model "
         "predicts the next action at every position", "00_overview, 06_training"),
    Item("basics.pointwise_attention", "basics",
         "Explain why HSTU replaces softmax with pointwise SiLU attention divided by a constant n",
         "02_attention_math", "check_hstu_attention"),
    Item("basics.jagged_layout", "basics",
         "Describe a jagged batch (values + offsets) and why it saves the work padding wastes",
         "04_jagged_tensors", "check_lengths_to_offsets"),
    Item("basics.leave_one_out", "basics",
         "Describe the leave-one-out split and the pitfalls of evaluating on the test item every epoch",
         "01_data_format", "check_leave_one_out"),
    Item("basics.relative_bias", "basics",
         "Explain the relative attention bias: position offsets plus log-spaced time buckets",
         "02_attention_math", "check_time_bucket"),
    # core algorithms: the maths, re-implemented
    Item("core.softmax_attention", "core",
         "Implement causal, padding-aware softmax attention (the SASRec baseline)",
         "exercises/02_attention", "check_softmax_attention"),
    Item("core.hstu_attention", "core",
         "Implement HSTU pointwise attention: SiLU(q k^T + rab) / n, causal, times v",
         "exercises/02_attention", "check_hstu_attention"),
    Item("core.time_bucket", "core",
         "Implement the log time-bucket function of the relative attention bias",
         "exercises/02_attention", "check_time_bucket"),
    Item("core.stu_forward", "core",
         "Implement the STU layer forward pass (projections, gating by u, LayerNorm of A v, residual)",
         "exercises/03_stu", "check_stu_forward"),
    Item("core.jagged_to_padded", "core",
         "Convert between jagged and padded tensors using offsets",
         "exercises/04_jagged", "check_jagged_to_padded"),
    Item("core.jagged_attention", "core",
         "Compute HSTU attention directly on a jagged batch, with no padded copy",
         "exercises/04_jagged", "check_jagged_hstu_attention"),
    # practical skills: data, training, evaluation
    Item("practical.user_sequences", "practical",
         "Build time-sorted per-user sequences from a ratings table (stable order for ties)",
         "exercises/01_data", "check_user_sequences"),
    Item("practical.split", "practical",
         "Build leave-one-out train / valid / test examples with a history window",
         "exercises/01_data", "check_leave_one_out"),
    Item("practical.sampled_softmax", "practical",
         "Implement the sampled softmax loss (L2-normalised, temperature, accidental hits masked)",
         "exercises/06_training", "check_sampled_softmax_loss"),
    Item("practical.metrics", "practical",
         "Compute HR@K and NDCG@K from full-ranking scores", "exercises/06_training", "check_hr_ndcg"),
    Item("practical.read_new_format", "practical",
         "Read a new dataset's raw format into the ratings table the pipeline expects",
         "exercises/07_project", "check_ratings_table"),
    Item("practical.train_model", "practical",
         "Train HSTU and SASRec, read the curves and compare with a popularity baseline",
         "06_training_ml1m"),
    # advanced skills: kernels, performance, new data
    Item("advanced.triton_jagged", "advanced",
         "Write a Triton kernel over a jagged batch (program ids, blocks, masks)",
         "exercises/05_triton", "check_triton_jagged_to_padded"),
    Item("advanced.triton_hstu_forward", "advanced",
         "Write the HSTU attention forward tile loop in Triton (causal tile skipping, no online softmax)",
         "exercises/05_triton", "check_triton_hstu_forward"),
    Item("advanced.performance", "advanced",
         "Measure the speed and memory levers (jagged, Triton, bf16, recomputation) and pick the right one",
         "07_performance, 08_troubleshooting"),
    Item("advanced.new_dataset", "advanced",
         "Apply HSTU to a new dataset and report HR@10 / NDCG@10 against a baseline",
         "exercises/07_project", "check_project_results"),
)

_BY_ID = {item.id: item for item in ITEMS}


def item(item_id: str) -> Item:
    """Look an item up by id, with a message that lists the valid ids."""
    try:
        return _BY_ID[item_id]
    except KeyError:
        raise KeyError(f"unknown checklist item {item_id!r}; valid ids: {sorted(_BY_ID)}") from None


def items_for_check(check_name: str) -> list[Item]:
    """The items that passing `check_name` ticks (a check may tick a concept and an algorithm)."""
    return [it for it in ITEMS if it.check == check_name]


# ---- storage -------------------------------------------------------------------------------------------

class ProgressFileError(HSTUError, OSError):
    """The progress file's folder cannot be written (read-only, no permission); the message says what to do.

    An OSError, so code that already tolerates a failed save (a passing check) keeps going."""


_READ_ONLY = (errno.EACCES, errno.EPERM, errno.EROFS)


def _read_only_error(path: Path, exc: OSError) -> ProgressFileError:
    return ProgressFileError(
        f"cannot write the progress file {path}: its folder {path.parent} is read-only or not yours "
        f"({type(exc).__name__}: {exc.strerror or exc}). Point HSTU_PROGRESS_FILE at a writable file, e.g. "
        "`export HSTU_PROGRESS_FILE=/tmp/hstu_progress.json` (or os.environ[...] in the notebook), then "
        "re-run the cell.")


def progress_path() -> Path:
    """Where the checklist is saved: $HSTU_PROGRESS_FILE, else ~/.hstu_tutorial/progress.json."""
    env = os.environ.get("HSTU_PROGRESS_FILE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".hstu_tutorial" / "progress.json"


def _empty() -> dict:
    return {"version": FORMAT_VERSION, "items": {}}


def _validate(state) -> str | None:
    """Return what is wrong with a loaded state, or None when it is usable."""
    if not isinstance(state, dict):
        return f"top level is a {type(state).__name__}, expected a JSON object"
    if state.get("version") != FORMAT_VERSION:
        return f"version is {state.get('version')!r}, expected {FORMAT_VERSION}"
    items = state.get("items")
    if not isinstance(items, dict):
        return "'items' is missing or not an object"
    for key, value in items.items():
        if not isinstance(value, dict) or not isinstance(value.get("done"), bool):
            return f"item {key!r} has no boolean 'done' field"
    return None


def load(path: str | Path | None = None) -> dict:
    """Read the saved state. A missing file is an empty checklist; an unreadable one is backed up,
    reported (a warning that says where the backup is) and replaced by an empty checklist."""
    path = Path(path) if path is not None else progress_path()
    if not path.exists():
        return _empty()
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        problem = _validate(state)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        problem = f"{type(exc).__name__}: {exc}"
    if problem is None:
        # unknown ids (an item renamed in a newer version) are kept, so nothing the learner did is lost
        return state
    try:
        backup = _backup(path)
    except OSError as exc:  # read-only folder: report, keep the file as it is, go on with an empty list
        hint = str(_read_only_error(path, exc)) if exc.errno in _READ_ONLY else f"{type(exc).__name__}: {exc}"
        warnings.warn(
            f"hstu_tutorial: the progress file {path} could not be read ({problem}) and could not be backed "
            f"up, so it is left untouched: {hint} For now the checklist starts empty.",
            RuntimeWarning, stacklevel=2,
        )
        return _empty()
    warnings.warn(
        f"hstu_tutorial: the progress file {path} could not be read ({problem}); the unreadable file was "
        f"kept as {backup}. Starting a fresh checklist: tick your items again, or restore them from the "
        "backup.", RuntimeWarning, stacklevel=2,
    )
    state = _empty()
    try:
        save(state, path)  # the backup holds the old bytes, so replacing the file loses nothing
    except OSError:
        pass
    return state


def _backup(path: Path) -> Path:
    """Keep a copy of `path` under a name no file has yet: `<name>.bak-<UTC time>-<n>`. Returns it.

    Never overwrites: a hard link (atomic, fails if the name exists) where the file system has them,
    else an exclusive create ("xb") and a copy of the bytes. Either way the original is left in place
    until the caller replaces it."""
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    for n in range(10_000):
        backup = path.with_name(f"{path.name}.bak-{stamp}-{n}")
        try:
            os.link(path, backup)
            return backup
        except FileExistsError:
            continue
        except OSError as exc:
            if exc.errno == errno.EROFS:  # a read-only file system: a copy would fail the same way
                raise
        try:  # no hard links here (FAT, some network drives): copy into a newly created file
            data = path.read_bytes()
            with open(backup, "xb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            return backup
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, f"10000 backups of {path.name} in one second", str(path))


def save(state: dict, path: str | Path | None = None) -> Path:
    """Write `state` atomically: a temporary file in the same folder, flushed, then `os.replace`."""
    path = Path(path) if path is not None else progress_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        if exc.errno in _READ_ONLY:
            raise _read_only_error(path, exc) from exc
        raise
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(state, f, indent=1, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic on POSIX and Windows: readers see the old or the new file
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()


def set_done(item_id: str, done: bool = True, by: str = "manual", path: str | Path | None = None) -> dict:
    """Tick (or untick) one item and save. Returns the new state."""
    item(item_id)  # validates the id
    state = load(path)
    state["items"][item_id] = {"done": bool(done), "by": by, "at": _now()}
    save(state, path)
    return state


def mark_done(check_name: str, path: str | Path | None = None) -> list[str]:
    """Tick every item wired to `check_name` (called by a passing check). Returns the ids ticked.
    Saving must never break a notebook: a failure to write is reported and ignored."""
    ids = [it.id for it in items_for_check(check_name)]
    if not ids:
        return []
    try:
        state = load(path)
        for item_id in ids:
            state["items"][item_id] = {"done": True, "by": check_name, "at": _now()}
        save(state, path)
    except OSError as exc:
        warnings.warn(f"hstu_tutorial: could not save your progress ({exc}); the check still passed.",
                      RuntimeWarning, stacklevel=2)
    return ids


def is_done(item_id: str, state: dict | None = None) -> bool:
    state = state if state is not None else load()
    entry = state["items"].get(item_id)
    return bool(entry and entry.get("done"))


def reset(path: str | Path | None = None) -> None:
    """Untick everything (the file is rewritten empty, atomically)."""
    save(_empty(), path)


def summary(state: dict | None = None) -> dict[str, tuple[int, int]]:
    """{group title: (done, total)} in display order."""
    state = state if state is not None else load()
    out = {}
    for key, title in GROUPS.items():
        group = [it for it in ITEMS if it.group == key]
        out[title] = (sum(is_done(it.id, state) for it in group), len(group))
    return out


# ---- display -------------------------------------------------------------------------------------------

def checklist_text(state: dict | None = None) -> str:
    """The checklist as plain text: `[x]` done, `[ ]` to do, with the check that ticks each item."""
    state = state if state is not None else load()
    lines = []
    for key, title in GROUPS.items():
        group = [it for it in ITEMS if it.group == key]
        done = sum(is_done(it.id, state) for it in group)
        lines.append(f"{title} ({done}/{len(group)})")
        for it in group:
            mark = "x" if is_done(it.id, state) else " "
            how = f"  <- {it.check}" if it.check else ""
            lines.append(f"  [{mark}] {it.text}  ({it.where}){how}")
    return "\n".join(lines)


def show_checklist(path: str | Path | None = None) -> str:
    """Print the checklist as text (works without ipywidgets) and return the text."""
    text = checklist_text(load(path))
    print(text)
    from hstu_tutorial.data.paths import display_path  # lazily: the data package is heavier than this module

    print(f"(saved in {display_path(Path(path) if path else progress_path())}; tick by hand with "
          "hstu_tutorial.progress.set_done('<item id>'), ids: hstu_tutorial.progress.ITEMS)")
    return text


def checklist_widget(path: str | Path | None = None):
    """An ipywidgets checklist: one checkbox per item, grouped, saved on every click.

    Falls back to `show_checklist()` (text) and returns None where ipywidgets is not installed.
    """
    try:
        import ipywidgets as w
    except ImportError:
        print("ipywidgets is not installed: showing the checklist as text "
              "(pip install ipywidgets for checkboxes).")
        show_checklist(path)
        return None

    state = load(path)
    boxes: dict[str, w.Checkbox] = {}
    status = w.HTML()
    headers: dict[str, w.HTML] = {}

    def refresh_headers():
        st = load(path)
        for key, title in GROUPS.items():
            group = [it for it in ITEMS if it.group == key]
            done = sum(is_done(it.id, st) for it in group)
            headers[key].value = f"<b>{title}</b> &nbsp; {done}/{len(group)}"

    def on_change(change, item_id):
        try:
            set_done(item_id, change["new"], by="checkbox", path=path)
        except OSError as exc:  # a read-only folder: say so under the boxes instead of a hidden traceback
            status.value = f"<small>not saved: {html.escape(str(exc))}</small>"
            return
        refresh_headers()
        status.value = f"<small>saved to {Path(path) if path else progress_path()}</small>"

    sections = []
    for key in GROUPS:
        headers[key] = w.HTML()
        rows = [headers[key]]
        for it in (i for i in ITEMS if i.group == key):
            tip = f"{it.where}" + (f"; ticked by {it.check}" if it.check else "")
            box = w.Checkbox(value=is_done(it.id, state), description=it.text, indent=False,
                             tooltip=tip, layout=w.Layout(width="auto"))
            box.add_class("hstu-checklist-item")
            box.observe(lambda ch, i=it.id: on_change(ch, i), names="value")
            boxes[it.id] = box
            rows.append(box)
        sections.append(w.VBox(rows))
    refresh_headers()
    widget = w.VBox(sections + [status])
    widget.add_class("hstu-checklist")
    widget.boxes = boxes  # for tests and for ticking from code
    return widget
