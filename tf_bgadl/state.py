"""The active-learning state (labeled ids, pool ids) and atomic files in a workdir."""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import tempfile
from typing import Any, Iterable

import numpy as np


def utc_now() -> str:
    """The current UTC time, ISO 8601 to the second (the time stamps of records and logs)."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def atomic_write_text(path: str, text: str) -> None:
    """Writes `text` to `path` so that readers see the old or the new file, never a partial one."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_write_json(path: str, value: Any) -> None:
    atomic_write_text(path, json.dumps(value, indent=1, sort_keys=True) + "\n")


def write_jsonl(path: str, rows: Iterable[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


def read_jsonl(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


@dataclasses.dataclass(frozen=True)
class ActiveLearningState:
    """Which training ids are labeled, in the pool, or held out for validation after `iteration`.

    Invariants (checked on construction): ids are unique; the labeled set, the pool and the
    validation set are pairwise disjoint. Validation ids are never acquired.
    """

    iteration: int
    labeled_ids: np.ndarray  # int64 [L], in acquisition order
    pool_ids: np.ndarray  # int64 [P], sorted
    validation_ids: np.ndarray = dataclasses.field(
        default_factory=lambda: np.zeros(0, np.int64))  # int64 [V], sorted

    def __post_init__(self):
        sets = {}
        for name in ("labeled_ids", "pool_ids", "validation_ids"):
            ids = np.asarray(getattr(self, name), np.int64).reshape(-1)
            object.__setattr__(self, name, ids)
            if len(np.unique(ids)) != len(ids):
                raise ValueError(f"{name} must be unique")
            sets[name] = ids
        names = list(sets)
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                overlap = np.intersect1d(sets[a], sets[b])
                if overlap.size:
                    raise ValueError(f"{a} and {b} overlap: {overlap[:10].tolist()}")

    def acquire(self, ids: np.ndarray) -> "ActiveLearningState":
        """Moves `ids` from the pool to the labeled set; returns the state of the next iteration.

        Raises:
          ValueError: if an id is not in the pool (validation ids never are) or is repeated.
        """
        ids = np.asarray(ids, np.int64)
        if len(np.unique(ids)) != len(ids):
            raise ValueError("acquired ids must be unique")
        missing = np.setdiff1d(ids, self.pool_ids)
        if missing.size:
            raise ValueError(f"acquired ids not in the pool: {missing[:10].tolist()}")
        return ActiveLearningState(self.iteration + 1, np.concatenate([self.labeled_ids, ids]),
                                   np.setdiff1d(self.pool_ids, ids), self.validation_ids)

    def to_json(self) -> dict:
        return {"iteration": self.iteration, "labeled_ids": self.labeled_ids.tolist(),
                "pool_ids": self.pool_ids.tolist(),
                "validation_ids": self.validation_ids.tolist()}

    @classmethod
    def from_json(cls, value: dict) -> "ActiveLearningState":
        return cls(value["iteration"], value["labeled_ids"], value["pool_ids"],
                   value.get("validation_ids", []))


def _balanced_draw(labels: np.ndarray, candidates: np.ndarray, per_class: int, rng,
                   what: str) -> np.ndarray:
    """`per_class` ids of each class drawn from `candidates` without replacement (classes with
    a known label: negative labels mean "not known")."""
    drawn = []
    for c in np.unique(labels[labels >= 0]):
        idx = candidates[labels[candidates] == c]
        if len(idx) < per_class:
            raise ValueError(f"class {c} has {len(idx)} training examples left, fewer than "
                             f"{what}={per_class}")
        drawn.append(rng.choice(idx, per_class, replace=False))
    return np.concatenate(drawn) if drawn else np.zeros(0, np.int64)


def initial_state(labels: np.ndarray, per_class: int, seed: int,
                  validation_per_class: int = 0) -> ActiveLearningState:
    """A class-balanced labeled set and validation set; every other id in the pool.

    The labeled set is drawn first, with the same stream as without validation, so adding a
    validation split does not change a seed's initial labeled set; the validation ids come from
    a stream of their own among the remaining ids.

    When some labels are not known (negative: a folder's unlabeled/ images), those images are
    the pool and every image with a known label starts labeled, except the validation ids
    (drawn from them with the same stream); `per_class` is then not used.

    Args:
      labels: int [N], labels of the training split (the test split never enters); negative
        where not known.
      per_class: labeled examples per class.
      seed: the run's seed.
      validation_per_class: held-out validation examples per class (0: none).

    Raises:
      ValueError: if a class has too few examples.
    """
    labels = np.asarray(labels)
    everything = np.arange(len(labels))
    if (labels < 0).any():
        known = np.flatnonzero(labels >= 0)
        validation_ids = np.zeros(0, np.int64)
        if validation_per_class:
            validation_ids = np.sort(_balanced_draw(
                labels, known, validation_per_class, np.random.default_rng([seed, 0x7A1]),
                "validation_per_class"))
        return ActiveLearningState(0, np.setdiff1d(known, validation_ids),
                                   np.flatnonzero(labels < 0), validation_ids)
    labeled_ids = _balanced_draw(labels, everything, per_class,
                                 np.random.default_rng([seed, 0x1AB]), "initial_per_class")
    validation_ids = np.zeros(0, np.int64)
    if validation_per_class:
        validation_ids = np.sort(_balanced_draw(
            labels, np.setdiff1d(everything, labeled_ids), validation_per_class,
            np.random.default_rng([seed, 0x7A1]), "validation_per_class"))
    pool = np.setdiff1d(everything, np.concatenate([labeled_ids, validation_ids]))
    return ActiveLearningState(0, labeled_ids, pool, validation_ids)


@dataclasses.dataclass(frozen=True)
class GeneratedSet:
    """Generated samples x' that joined the labeled set (never oracle labels, never in the pool).

    Attributes:
      images: uint8 [G, H, W, C].
      labels: int64 [G], the oracle label y* of each source.
      source_ids: int64 [G], the id of the acquired x* each x' was generated from.
      iterations: int64 [G], the iteration that added it.
    """

    images: np.ndarray
    labels: np.ndarray
    source_ids: np.ndarray
    iterations: np.ndarray

    @classmethod
    def empty(cls, image_shape) -> "GeneratedSet":
        return cls(np.zeros((0, *image_shape), np.uint8), np.zeros(0, np.int64),
                   np.zeros(0, np.int64), np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.labels)

    def add(self, images, labels, source_ids, iteration: int) -> "GeneratedSet":
        n = len(labels)
        return GeneratedSet(np.concatenate([self.images, np.asarray(images, np.uint8)]),
                            np.concatenate([self.labels, np.asarray(labels, np.int64)]),
                            np.concatenate([self.source_ids, np.asarray(source_ids, np.int64)]),
                            np.concatenate([self.iterations, np.full(n, iteration, np.int64)]))

    def save(self, path: str) -> None:
        """Atomic .npz write."""
        tmp = path + ".tmp.npz"
        np.savez(tmp, images=self.images, labels=self.labels, source_ids=self.source_ids,
                 iterations=self.iterations)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str, count: int) -> "GeneratedSet":
        """The first `count` samples saved at `path` (the count a finished iteration recorded)."""
        with np.load(path) as f:
            if len(f["labels"]) < count:
                raise ValueError(f"{path} holds {len(f['labels'])} generated samples; the state "
                                 f"records {count}")
            return cls(*(f[k][:count] for k in ("images", "labels", "source_ids", "iterations")))
