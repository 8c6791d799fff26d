"""Text matching shared by the catalog search (api/search.py) and the gazetteer (geo/places.py):
accent folding and a bounded edit distance. It lives in geo because geo is the pure leaf package
both may import."""

from __future__ import annotations

import unicodedata


def fold(text: str) -> str:
    """Lower-case without accents: "Soirée" -> "soiree"."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def within_edits(a: str, b: str, limit: int) -> bool:
    """Whether the edit distance between a and b is at most `limit` (Levenshtein, early exit)."""
    if abs(len(a) - len(b)) > limit:
        return False
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb))
        if min(current) > limit:
            return False
        previous = current
    return previous[-1] <= limit
