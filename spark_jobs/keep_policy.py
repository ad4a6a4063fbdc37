"""Which duplicate is kept: the `keep` policy that exact and near dedup share.

    exact_dedup:
      keep: [stars desc, doc_id asc]                     # conf/spark/pipeline.yaml
    near_dedup:
      keep: [stars desc, size_bytes desc, doc_id asc]    # conf/spark/near_dedup.yaml

A policy is a list of `column [asc|desc]` keys (asc by default). Each group of duplicates (same content hash, or
one near-duplicate cluster) keeps its first row in this order, nulls last, with the id ascending as the final
tie-break, so the choice never depends on partitioning or on run order. `KeepPolicy.parse` reads a policy once;
it then gives the Spark sort expressions of a ranking window (`order`) and the Arrow sort keys of the in-memory
clustering (`arrow_order`), which sort alike (Arrow orders strings by their UTF-8 bytes, as Spark does).

`keep` was called `order_by` in exact dedup and `representative` in near dedup; both old keys are still accepted
in YAML and on the command line (`merge_old_key`), since configs written for earlier releases set them.

Public API: `KeepPolicy` (`parse`, `problems`, `columns`, `require`, `order`, `arrow_order`), `merge_old_key`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from pyspark.sql import Column
from pyspark.sql import functions as F

_DIRECTIONS = ("asc", "desc")


@dataclasses.dataclass(frozen=True)
class KeepPolicy:
    """A parsed `keep` policy: (column, descending) keys in policy order, each column once (a later key on the
    same column could never decide)."""

    keys: tuple[tuple[str, bool], ...]

    @staticmethod
    def problems(spec: Sequence[str], *, key: str = "keep", columns: Sequence[str] | None = None,
                 table: str = "the input") -> list[str]:
        """Messages naming `key[i]` for every malformed item of `spec` (and, given `columns`, every column not
        among them)."""
        problems = []
        for i, item in enumerate(spec):
            parts = item.split()
            if len(parts) not in (1, 2) or (len(parts) == 2 and parts[1].lower() not in _DIRECTIONS):
                problems.append(f"{key}[{i}]: {item!r} must be 'column' or 'column asc|desc'")
            elif columns is not None and parts[0] not in columns:
                problems.append(f"{key}[{i}]: {parts[0]!r} is not a column of {table}")
        return problems

    @classmethod
    def parse(cls, spec: Sequence[str]) -> KeepPolicy:
        """The policy of a validated spec (`problems(spec)` is empty)."""
        keys: dict[str, bool] = {}
        for item in spec:
            parts = item.split()
            keys.setdefault(parts[0], len(parts) == 2 and parts[1].lower() == "desc")
        return cls(tuple(keys.items()))

    def columns(self, id_col: str) -> list[str]:
        """The policy's columns other than the id, in policy order."""
        return [c for c, _ in self.keys if c != id_col]

    def require(self, columns: Sequence[str], *, key: str = "keep") -> None:
        """Raises ValueError naming the policy's columns missing from `columns`."""
        missing = [c for c, _ in self.keys if c not in columns]
        if missing:
            raise ValueError(f"{key}: columns {missing} are not in the input ({list(columns)})")

    def order(self, id_col: str) -> list[Column]:
        """Spark sort expressions: the policy, nulls last, then the id ascending."""
        return [F.col(c).desc_nulls_last() if desc else F.col(c).asc_nulls_last() for c, desc in self.keys] + [
            F.col(id_col).asc()]

    def arrow_order(self, id_col: str) -> list[tuple[str, str]]:
        """`order` as pyarrow sort keys (pyarrow puts nulls last by default, as `order` does)."""
        return [(c, "descending" if desc else "ascending") for c, desc in self.keys] + [(id_col, "ascending")]


def merge_old_key(keep: Sequence[str], old: Sequence[str] | None, default: Sequence[str], *,
                  old_key: str) -> tuple[list[str], str, list[str]]:
    """(the policy in force, the key it came from, problems) for a config section that has `keep` and its old key.

    The old key applies when `keep` is at its default; it is ignored when it equals the default itself (a shipped
    file may still set it while `keep` is given on the command line); two different non-default policies are a
    problem naming the old key."""
    if old is None or list(old) == list(keep):
        return list(keep), "keep", []
    if list(keep) == list(default):
        return list(old), old_key, []
    if list(old) == list(default):
        return list(keep), "keep", []
    return list(keep), "keep", [f"{old_key}: the old name of keep, which is given too; give keep only"]
