"""Node tags: what a tag may be, and what tags cost in a member's record.

A tag is a short word a node carries (``gpu``, ``zone=eu-1``): members are found by tag
(:meth:`gossip.Cluster.nodes_by_tag`) and tagged broadcasts reach only the members that hold it
(:meth:`gossip.Cluster.send_tagged`). Tags travel in the member's record with its metadata,
ordered by the metadata's stamp, and count against ``Config.max_metadata_size``.

Pure data: imports msgpack and nothing that does I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import msgpack

__all__ = ["NO_TAGS", "MAX_TAGS", "MAX_TAG_LENGTH", "TAG_PATTERN", "check_tag", "check_tags", "tags_size"]

NO_TAGS: frozenset[str] = frozenset()
"""The empty tag set (a member without tags)."""
MAX_TAGS = 64
"""The most tags one member may carry (checked for local tags and at decode)."""
MAX_TAG_LENGTH = 64
"""The longest tag, in characters."""
TAG_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/=+-]*")
"""What a tag looks like: ASCII letters, digits and ``. _ : / = + -``, starting with a letter or
a digit (so that a tag is safe in a log line, a URL path and a shell word)."""


def check_tag(tag: object) -> str | None:
    """Return why ``tag`` is not a valid tag, or None if it is."""
    if type(tag) is not str:
        return f"a tag is a str, got {type(tag).__name__}"
    if not 0 < len(tag) <= MAX_TAG_LENGTH:
        return f"a tag has 1..{MAX_TAG_LENGTH} characters, got {len(tag)}"
    if TAG_PATTERN.fullmatch(tag) is None:
        return f"tag {tag!r} has characters outside {TAG_PATTERN.pattern}"
    return None


def check_tags(tags: object) -> tuple[frozenset[str], str | None]:
    """Return ``(the tags as a frozenset, None)``, or ``(NO_TAGS, why they are refused)``.

    ``tags`` is a set, frozenset, list or tuple of at most :data:`MAX_TAGS` valid tags
    (:func:`check_tag`); a bare string is refused (it is not a collection of tags).
    """
    if not isinstance(tags, (set, frozenset, list, tuple)):
        return NO_TAGS, f"tags are a set of strings, got {type(tags).__name__}"
    out = frozenset(tags)
    if len(out) > MAX_TAGS:
        return NO_TAGS, f"at most {MAX_TAGS} tags, got {len(out)}"
    for t in sorted(out, key=str):
        why = check_tag(t)
        if why is not None:
            return NO_TAGS, why
    return out, None


def tags_size(tags: Iterable[str]) -> int:
    """Return the bytes ``tags`` add to a member's record (msgpack), counted against
    ``Config.max_metadata_size`` with the metadata (0 for no tags)."""
    ordered = sorted(tags)
    if not ordered:
        return 0
    return len(msgpack.packb(ordered, use_bin_type=True))
