"""Duplicate pairs -> groups (union-find), a suggested keeper per group, and each
member's similarity to that keeper."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from ..errors import ConfigError

KEEP_POLICIES = ("resolution", "size", "oldest", "shortest-path")


class UnionFind:
    """Disjoint sets over hashable items (path halving, union by size)."""

    def __init__(self):
        self.parent: dict[Any, Any] = {}
        self.size: dict[Any, int] = {}

    def find(self, x):
        if x not in self.parent:
            self.parent[x], self.size[x] = x, 1
            return x
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a, b) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if self.size[ra] < self.size[rb]:
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.size[ra] += self.size[rb]

    def groups(self) -> list[list]:
        """Sets with two or more members, each sorted, ordered by their first member."""
        by_root: dict[Any, list] = {}
        for x in self.parent:
            by_root.setdefault(self.find(x), []).append(x)
        return sorted((sorted(g) for g in by_root.values() if len(g) > 1), key=lambda g: g[0])


def connected_groups(pairs: Iterable[tuple[Any, Any]]) -> list[list]:
    """Connected components (size >= 2) of the graph whose edges are ``pairs``."""
    uf = UnionFind()
    for a, b in pairs:
        uf.union(a, b)
    return uf.groups()


def linked_groups(pairs: Sequence[tuple[Any, Any]], accept: Callable[[list[tuple[Any, Any]]], np.ndarray]
                  ) -> list[list]:
    """Groups in which most pairs are verified duplicates (average linkage by vote).

    Plain connected components chain: a ~ b and b ~ c put a and c together although
    they may be merely similar (neighbouring turntable views of one object, a
    sequence of shots). Here two groups merge on an accepted pair only if ``accept``
    passes a strict majority of all cross pairs between them (the accepted pair
    included). A chain a ~ b ~ c with a !~ c does not merge (1 of 2), while one
    member that a single check misses (a mirrored copy against a rotated one, which
    local features cannot match) does not keep a copy out of a group it matches
    otherwise.

    Args:
        pairs: accepted pairs, strongest first (the merge order).
        accept: ``[(x, y), ...] -> (k,) bool``: is each pair a duplicate.

    Returns:
        Groups (size >= 2), each sorted, ordered by their first member.
    """
    group_of: dict[Any, list] = {}
    for a, b in pairs:
        ga, gb = group_of.get(a, [a]), group_of.get(b, [b])
        if ga is gb:
            continue
        cross = [(x, y) for x in ga for y in gb if {x, y} != {a, b}]
        if cross and 2 * (1 + int(np.sum(accept(cross)))) <= len(cross) + 1:
            continue
        merged = ga + gb
        for x in merged:
            group_of[x] = merged
    seen, out = set(), []
    for g in group_of.values():
        if id(g) not in seen:
            seen.add(id(g))
            out.append(sorted(g))
    return sorted(out, key=lambda g: g[0])


def _keeper_key(policy: str) -> Callable[[Mapping[str, Any]], tuple]:
    # Each key sorts the preferred keeper first; the path breaks ties deterministically.
    if policy == "resolution":
        return lambda it: (-(it.get("width") or 0) * (it.get("height") or 0), -(it.get("size") or 0), it["path"])
    if policy == "size":
        return lambda it: (-(it.get("size") or 0), it["path"])
    if policy == "oldest":
        return lambda it: (it.get("mtime") or float("inf"), it["path"])
    if policy == "shortest-path":
        return lambda it: (len(it["path"]), it["path"].count("/"), it["path"])
    raise ConfigError(f"unknown keep policy {policy!r}; valid: {', '.join(KEEP_POLICIES)}")


def choose_keeper(items: Sequence[Mapping[str, Any]], policy: str = "resolution") -> Mapping[str, Any]:
    """The item to keep: ``resolution`` (most pixels, then largest file), ``size``
    (largest file), ``oldest`` (earliest mtime) or ``shortest-path``."""
    return min(items, key=_keeper_key(policy))


@dataclass
class Member:
    """A non-keeper member of a group; ``similarity`` to the keeper in ``[-1, 1]``
    (CNN cosine; 1.0 for identical bytes; larger = more similar)."""

    path: str
    similarity: float
    id: int = -1
    width: int | None = None
    height: int | None = None
    size: int | None = None


@dataclass
class Group:
    """A duplicate group: the suggested keeper and the other members."""

    keeper: str
    members: list[Member] = field(default_factory=list)
    keeper_id: int = -1
    keeper_info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape: ``{"keeper": path, "members": [{"path", "similarity"}]}``."""
        return {"keeper": self.keeper,
                "members": [{"path": m.path, "similarity": round(float(m.similarity), 6)} for m in self.members]}


def build_groups(pairs: Iterable[tuple[int, int]], items: Mapping[int, Mapping[str, Any]],
                 similarity: Callable[[int, int], float], policy: str = "resolution",
                 components: list[list] | None = None) -> list[Group]:
    """Join duplicate pairs into groups and pick a keeper for each.

    Args:
        pairs: accepted duplicate pairs of item ids.
        items: ``{id: {"path", "width", "height", "size", "mtime", "content_hash"}}``.
        similarity: ``(keeper_id, member_id) -> similarity`` (larger = more similar).
        policy: one of :data:`KEEP_POLICIES`.
        components: the groups' member ids when already formed (e.g. by
            :func:`linked_groups`); default: connected components of ``pairs``.

    Returns:
        Groups, largest first (then by keeper path); members most similar first.
    """
    _keeper_key(policy)
    out = []
    for ids in (components if components is not None else connected_groups(pairs)):
        rows = [{**items[i], "id": i} for i in ids]
        keeper = choose_keeper(rows, policy)
        members = []
        for row in rows:
            if row["id"] == keeper["id"]:
                continue
            same_bytes = bool(row.get("content_hash")) and row.get("content_hash") == keeper.get("content_hash")
            sim = 1.0 if same_bytes else float(similarity(keeper["id"], row["id"]))
            members.append(Member(row["path"], sim, row["id"], row.get("width"), row.get("height"), row.get("size")))
        members.sort(key=lambda m: (-m.similarity, m.path))
        out.append(Group(keeper["path"], members, keeper["id"],
                         {k: keeper.get(k) for k in ("width", "height", "size")}))
    out.sort(key=lambda g: (-len(g.members), g.keeper))
    return out
