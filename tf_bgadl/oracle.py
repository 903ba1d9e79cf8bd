"""The human oracle (`--oracle=file`): a CSV of queries per iteration, labeled by a person.

An iteration that acquires writes its queries and stops the run (`LabelsNeeded`); the person
fills the `label` column; the same command then reads the file back (`read_labels`), checks all
of it, and only then does the iteration go on. Files in `<workdir>/queries/`:

  iter_NNNN.csv    one line per queried image, in acquisition order: `id`, `image` (the file of
                   a folder data set, else the id), `score` (the acquisition score),
                   `predicted_class` and `predicted_probability` (the current classifier's
                   guess, deterministic), and an empty `label` column to fill in.
  iter_NNNN.png    a contact sheet of the queried images with their ids.
  iter_NNNN.json   what the loop asked (ids in acquisition order, scores): the reference the
                   CSV is checked against. Written once; never edit it.

A label is a class name or a class index (a name wins where a folder is named like an index);
`skip` returns the image to the pool unlabeled. Every queried id needs exactly one line.
`--labels_from=<csv>` reads the labels from another file of the same format (e.g. exported
from a labeling tool) instead of the iteration's CSV.
"""

from __future__ import annotations

import csv
import io
import json
import os
from typing import Sequence

import numpy as np

from tf_bgadl.plotting import plot_contact_sheet
from tf_bgadl.state import atomic_write_json, atomic_write_text

SKIP = "skip"
SKIPPED = -1  # `read_labels`' value for an id the person skipped
COLUMNS = ("id", "image", "score", "predicted_class", "predicted_probability", "label")


class LabelsNeeded(Exception):
    """The run stopped at an iteration that needs a person's labels (not an error).

    Attributes:
      iteration: the iteration that asks.
      csv_path: the file to fill in.
      sheet_path: the contact sheet of the queried images.
      count: how many images are asked for.
    """

    def __init__(self, iteration: int, csv_path: str, sheet_path: str, count: int):
        self.iteration, self.csv_path, self.sheet_path, self.count = (
            iteration, csv_path, sheet_path, count)
        super().__init__(f"iteration {iteration} asks for {count} labels: fill in the label "
                         f"column of {csv_path} (images: {sheet_path})")


class LabelFileError(ValueError):
    """A labels file is not valid; the message lists every problem as `file:line: problem`."""

    def __init__(self, path: str, problems: Sequence[str]):
        self.path, self.problems = path, list(problems)
        shown = self.problems[:20]
        more = len(self.problems) - len(shown)
        super().__init__(f"{len(self.problems)} problem(s) in {path}; nothing was changed, fix "
                         "the file and rerun:\n  " + "\n  ".join(shown)
                         + (f"\n  ... and {more} more" if more else ""))


def query_paths(workdir: str, iteration: int) -> dict[str, str]:
    """The `csv`, `png` and `json` files of `iteration`'s queries."""
    stem = os.path.join(workdir, "queries", f"iter_{iteration:04d}")
    return {"csv": stem + ".csv", "png": stem + ".png", "json": stem + ".json"}


def load_queries(workdir: str, iteration: int) -> dict | None:
    """What `iteration` asked (`ids`, `scores`), or None when it has not asked yet."""
    path = query_paths(workdir, iteration)["json"]
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def class_name(class_names: Sequence[str] | None, label: int) -> str:
    return str(class_names[label]) if class_names else str(label)


def write_queries(workdir: str, iteration: int, ids: np.ndarray, scores: np.ndarray | None,
                  images: np.ndarray, *, sources: Sequence[str] | None,
                  class_names: Sequence[str] | None,
                  probabilities: np.ndarray | None) -> dict[str, str]:
    """Writes `iteration`'s queries (json, then csv and contact sheet); returns their paths.

    Args:
      workdir: the run's folder.
      iteration: the iteration that asks.
      ids: int [K] queried training ids, in acquisition order.
      scores: float [K] their acquisition scores, or None (random acquisition).
      images: uint8 [K, H, W, C] their images.
      sources: where each training id comes from (indexed by id), or None.
      class_names: the C class names, or None (labels are indices).
      probabilities: float [K, C] the classifier's predictive probabilities, or None.

    The json is written last: while it does not exist the queries are not asked yet (a run
    interrupted while writing them writes them again), and once it does the CSV and the
    contact sheet are there.
    """
    paths = query_paths(workdir, iteration)
    ids = np.asarray(ids, np.int64)
    score_list = None if scores is None else [float(s) for s in scores]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for k, i in enumerate(ids.tolist()):
        predicted = probability = ""
        if probabilities is not None:
            best = int(np.argmax(probabilities[k]))
            predicted = class_name(class_names, best)
            probability = f"{float(probabilities[k][best]):.4f}"
        writer.writerow([i, sources[i] if sources is not None else i,
                         "" if score_list is None else f"{score_list[k]:.6g}",
                         predicted, probability, ""])
    atomic_write_text(paths["csv"], out.getvalue())
    plot_contact_sheet(images, [f"id {i}" for i in ids.tolist()], paths["png"],
                       title=f"iteration {iteration}: {len(ids)} images to label "
                             f"({os.path.basename(paths['csv'])})")
    atomic_write_json(paths["json"], {"iteration": iteration, "ids": ids.tolist(),
                                      "scores": score_list})
    return paths


def is_unfilled(path: str) -> bool:
    """Whether the queries file at `path` exists and no line has a label yet (the person has not
    started: the run asks again rather than reporting every line as missing)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error):
        return False
    header = [h.strip().lower() for h in rows[0]] if rows else []
    if "label" not in header or len(rows) < 2:
        return False  # read_labels reports what is wrong
    column = header.index("label")
    return all(len(row) <= column or not row[column].strip() for row in rows[1:])


def _parse_label(value: str, class_names: Sequence[str] | None, num_classes: int) -> int | str:
    """The class index of a label, SKIPPED, or an error message (str)."""
    text = value.strip()
    if not text:
        return "missing label (fill in a class name or index, or skip)"
    if text.lower() == SKIP:
        return SKIPPED
    if class_names and text in class_names:
        return list(class_names).index(text)
    try:
        index = int(text)
    except ValueError:
        index = None
    if index is not None and 0 <= index < num_classes:
        return index
    allowed = (f"a class name ({', '.join(map(str, class_names))})" if class_names
               else "a class index")
    return (f"unknown class {value!r}; allowed: {allowed}, an index 0..{num_classes - 1}, "
            f"or {SKIP}")


def read_labels(path: str, queried_ids: Sequence[int], *, class_names: Sequence[str] | None,
                num_classes: int) -> dict[int, int]:
    """The labels of a filled queries file, checked as a whole.

    Args:
      path: the CSV (`COLUMNS`; only `id` and `label` are read, other columns may be dropped).
      queried_ids: the ids the iteration asked for.
      class_names: the class names, or None (labels are indices only).
      num_classes: C.

    Returns:
      {id: class index, or SKIPPED} for every queried id.

    Raises:
      LabelFileError: the file is missing or unreadable, lacks an `id` or `label` column, or has
        lines with a missing or unknown label, a duplicate id, an id that was not asked for,
        or a queried id without a line; lists every problem with its line and value.
    """
    if not os.path.exists(path):
        raise LabelFileError(path, [f"{path}: no such file"])
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise LabelFileError(path, [f"{path}: cannot be read as CSV: {e}"]) from e
    if not rows:
        raise LabelFileError(path, [f"{path}:1: empty file (expected the header "
                                    f"{','.join(COLUMNS)})"])
    header = [h.strip().lower() for h in rows[0]]
    missing = [c for c in ("id", "label") if c not in header]
    if missing:
        raise LabelFileError(path, [f"{path}:1: no {' and no '.join(repr(c) for c in missing)} "
                                    f"column (header: {rows[0]}; expected {','.join(COLUMNS)})"])
    id_col, label_col = header.index("id"), header.index("label")
    asked = {int(i) for i in queried_ids}
    problems, labels, first_line = [], {}, {}
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue  # blank lines are allowed
        cells = row + [""] * (max(id_col, label_col) + 1 - len(row))
        raw_id = cells[id_col].strip()
        try:
            image_id = int(raw_id)
        except ValueError:
            problems.append(f"{path}:{line}: id {raw_id!r} is not an integer")
            continue
        if image_id not in asked:
            problems.append(f"{path}:{line}: id {image_id} was not asked for at this iteration")
            continue
        if image_id in first_line:
            problems.append(f"{path}:{line}: id {image_id} is labeled twice (first on line "
                            f"{first_line[image_id]})")
            continue
        first_line[image_id] = line
        parsed = _parse_label(cells[label_col], class_names, num_classes)
        if isinstance(parsed, str):
            problems.append(f"{path}:{line}: id {image_id}: {parsed}")
        else:
            labels[image_id] = parsed
    for image_id in sorted(asked - set(first_line)):
        problems.append(f"{path}: id {image_id} was asked for and has no line")
    if problems:
        raise LabelFileError(path, problems)
    return labels
