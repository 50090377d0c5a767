"""Plans read as if the job table were one table, in either layout.

In the partitioned layout a plan reads the job table's partitions (``job_<md5>``, an index of
each); :func:`as_one_table` renames them to the job table and its indexes, leaves out the scans
of empty partitions (an empty table is read by whatever costs least: nothing), and turns an
Append whose remaining scans read the same way into one scan (rows added up), so that plan
tests state one expectation for both layouts. In the default layout it changes nothing.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import psycopg

__all__ = ["as_one_table"]

_NAMES = """
SELECT c.relname, p.relname, c.relkind = 'r' AND pg_relation_size(c.oid) = 0
FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid
JOIN pg_class p ON p.oid = i.inhparent
WHERE p.relnamespace = to_regnamespace(%(schema)s)
    AND (p.relname = 'job' OR p.relkind = 'I')
"""

_SUMMED = ("Actual Rows", "Rows Removed by Filter", "Rows Removed by Index Recheck")


def as_one_table(conn: psycopg.Connection[Any], query: str, plan: dict[str, Any]) -> dict[str, Any]:
    """``plan`` (a node of EXPLAIN's JSON for ``query``, a statement of one schema) with the
    job table's partitions read as the job table (a copy; the plan itself when the job table
    is not partitioned)."""
    schema = re.search(r'"(\w+)"\.', query)
    if schema is None:
        return plan
    rows = conn.execute(_NAMES, {"schema": schema[1]}).fetchall()
    if not rows:
        return plan
    parent = {child: name for child, name, _ in rows}
    empty = {child for child, _, is_empty in rows if is_empty}
    return _rewrite(copy.deepcopy(plan), parent, empty)


def _shape(node: dict[str, Any]) -> tuple[Any, ...]:
    return (
        node["Node Type"],
        node.get("Relation Name"),
        node.get("Index Name"),
        tuple(_shape(child) for child in node.get("Plans", [])),
    )


def _reads_empty(node: dict[str, Any], empty: set[str]) -> bool:
    return node.get("Relation Name") in empty


def _rewrite(node: dict[str, Any], parent: dict[str, str], empty: set[str]) -> dict[str, Any]:
    children: list[dict[str, Any]] = node.get("Plans", [])
    if node["Node Type"] in {"Append", "MergeAppend"} and any(
        c.get("Relation Name") in parent for c in children
    ):
        kept: list[dict[str, Any]] = [
            c for c in children if not _reads_empty(c, empty)
        ] or children[:1]
        kept = [_rewrite(c, parent, empty) for c in kept]
        if len({_shape(c) for c in kept}) == 1:
            merged = kept[0]
            for key in _SUMMED:
                if key in merged:
                    merged[key] = sum(c.get(key, 0) for c in kept)
            if "Parent Relationship" in node:
                merged["Parent Relationship"] = node["Parent Relationship"]
            return merged
        node["Plans"] = kept
        return node
    for key in ("Relation Name", "Index Name"):
        if key in node and node[key] in parent:
            node[key] = parent[node[key]]
    if children:
        node["Plans"] = [_rewrite(c, parent, empty) for c in children]
    return node
