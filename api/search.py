"""Catalog text search: every word typed must be found somewhere in a package.

A package's text is its name, description, category, tags and features. A word is found when it is
a literal substring of that text (so "(and" or "baby shower" work as typed), or, for a plain word,
when it names a word of the text by prefix ("karao"), by plural ("weddings" for "wedding" and back),
or with a small typo ("weding"). Accents are folded ("decor" finds "Décor"). The catalog is a few
dozen packages held in memory, so a linear scan is cheaper than any index.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from geo.textmatch import fold, within_edits

_WORD = re.compile(r"[^\W_]+")
# Prefixes shorter than this match too much ("a" is in everything); such words match whole words only.
MIN_PREFIX = 3
# Typos are forgiven only in words long enough to carry them (one edit from 6 letters, two from 9)
# and never in the first letter: "lights" must not find "nights".
TYPO_FROM = 6
TWO_TYPOS_FROM = 9


def stem(word: str) -> str:
    """A plural's singular, roughly: "weddings" -> "wedding", "parties" -> "party", "boxes" -> "box"."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith(("ches", "shes", "sses", "xes", "zes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


@dataclass(frozen=True, slots=True)
class PackageText:
    text: str                 # folded, for literal substrings
    words: frozenset[str]     # folded words
    stems: frozenset[str]

    def has(self, word: str) -> bool:
        if word in self.text:
            return True
        if not word.isalnum():
            return False  # punctuation is matched literally only
        root = stem(word)
        if root in self.stems:
            return True
        if len(word) >= MIN_PREFIX and any(w.startswith(word) for w in self.words):
            return True
        if len(word) >= TYPO_FROM:
            limit = 2 if len(word) >= TWO_TYPOS_FROM else 1
            return any(within_edits(root, s, limit) for s in self.stems
                       if s[:1] == root[:1] and abs(len(s) - len(root)) <= limit)
        return False


def package_text(package: Mapping[str, Any]) -> PackageText:
    parts: Iterable[str] = [str(package.get("name", "")), str(package.get("description", "")),
                            str(package.get("category", "")), *map(str, package.get("tags") or []),
                            *map(str, package.get("features") or [])]
    text = fold(" \n ".join(parts))
    words = frozenset(_WORD.findall(text))
    return PackageText(text, words, frozenset(stem(w) for w in words))


def query_words(q: str | None) -> list[str]:
    """The words typed, folded; each must be found."""
    return fold(q or "").split()


def matches(text: PackageText, words: list[str]) -> bool:
    return all(text.has(word) for word in words)
