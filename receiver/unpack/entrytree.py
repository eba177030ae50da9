"""The tree an archive's entries make, held in memory, and its links resolved within it.

The unpacker records every directory, file and symlink it creates here, one name part
per node (a child of a dict), so that looking an entry up costs one dict step per level
and a tree of 100,000 entries costs a name part and a dict slot each, not a full path.

Links are resolved in this tree alone, never on disk: the staging directory is moved
after unpacking (it, or its single top-level directory, becomes the version), so what
matters is where a link leads from the version's future place, and the disk around
the staging directory is not the disk around the version. `resolve` follows the
kernel's rules: each part of the target in turn, a link met on the way replaced by
where it leads, `..` taken after that (from the link's target, not lexically), at most
`MAX_LINK_HOPS` links per lookup. A link that climbs above `version` at any step is
refused: above it are the model's other versions, the other models, and `/`.
"""

from __future__ import annotations

# The kernel gives ELOOP after following this many links in one lookup (MAXSYMLINKS).
MAX_LINK_HOPS = 40
_TOO_MANY_HOPS = (
    f"leads through more than {MAX_LINK_HOPS} links in a row; the kernel would not follow it"
)

Path = tuple[str, ...]


class _Refused(Exception):
    """A link the kernel would not follow (a loop, too many hops); carries the reason."""


class Link:
    """A symlink entry: its target as written, and once resolved where it leads."""

    __slots__ = ("hops", "resolved", "target", "walkable")

    def __init__(self, target: str) -> None:
        self.target = target
        self.resolved: Path | None = None
        self.hops = 0  # links followed to resolve it, itself included
        self.walkable = False  # whether it leads to a directory, once resolved


FILE = object()  # a regular file (or a hard link to one): a leaf
Node = dict[str, "Node"] | Link | object


class EntryTree:
    def __init__(self) -> None:
        self.top: dict[str, Node] = {}
        self.links: list[Path] = []

    def version_root(self) -> Path:
        """The part of the tree that becomes the version, as `servable.find_saved_model`
        decides it: a single top-level directory, else the whole tree."""
        if len(self.top) == 1:
            ((name, node),) = self.top.items()
            if isinstance(node, dict):
                return (name,)
        return ()

    def lookup(self, parts: Path) -> Node | None:
        """The node at `parts`, not following links; None if nothing is there."""
        node: Node = self.top
        for part in parts:
            if not isinstance(node, dict):
                return None
            node = node.get(part)
            if node is None:
                return None
        return node

    def escapes(self, parts: Path, version: Path) -> str | None:
        """Why the link at `parts` leads out of `version`, or None if it stays inside."""
        link = self.lookup(parts)
        assert isinstance(link, Link)
        try:
            resolved = self._resolve(parts, link, version, set())
        except _Refused as refused:
            return str(refused)
        if resolved is None:
            return (
                "leads outside the model version through other links"
                if link.hops > 1
                else "leads outside the model version"
            )
        return None

    def _resolve(self, parts: Path, link: Link, version: Path, active: set[int]) -> Path | None:
        """Where the link at `parts` leads (None: out of `version`); memoised on the link.

        The walk keeps the node of each step, so each part of the target costs one dict
        step; once a step is not a directory (a file, or nothing: the kernel would stop
        there), the rest is only checked for climbing out."""
        if link.resolved is not None:
            return link.resolved
        if id(link) in active:
            raise _Refused(f"is part of a loop of links (through {'/'.join(parts)!r})")
        if len(active) >= MAX_LINK_HOPS:  # each link being resolved is one hop more
            raise _Refused(_TOO_MANY_HOPS)
        active.add(id(link))
        where: list[str] = list(parts[:-1])  # a link's parents are directories, never links
        nodes = self._nodes_of(where)  # nodes[-1] is the node at `where`
        walkable = True  # every step so far is a directory of the tree
        hops = 1
        for part in link.target.split("/"):
            if part in ("", "."):
                continue
            if part == "..":
                if len(where) <= len(version):
                    link.hops = hops
                    return None
                where.pop()
                if walkable:
                    nodes.pop()
                continue
            node = nodes[-1]
            child = node.get(part) if walkable and isinstance(node, dict) else None
            if not isinstance(child, Link):
                where.append(part)
                if walkable:
                    nodes.append(child)
                    walkable = isinstance(child, dict)
                continue
            resolved = self._resolve((*where, part), child, version, active)
            hops += child.hops
            if hops > MAX_LINK_HOPS:
                raise _Refused(_TOO_MANY_HOPS)
            if resolved is None:
                link.hops = hops
                return None
            where, walkable = list(resolved), child.walkable
            if walkable:
                nodes = self._nodes_of(where)
        active.discard(id(link))
        link.resolved, link.hops, link.walkable = tuple(where), hops, walkable
        return link.resolved

    def _nodes_of(self, path: list[str]) -> list[Node | None]:
        """The node at each prefix of `path`, a path of directories (at most MAX_DEPTH)."""
        nodes: list[Node | None] = [self.top]
        for part in path:
            node = nodes[-1]
            nodes.append(node.get(part) if isinstance(node, dict) else None)
        return nodes
