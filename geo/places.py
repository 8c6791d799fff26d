"""A gazetteer of the demo city: address search and reverse lookup that work offline.

The bundled file (data/places_bengaluru.csv) holds a few hundred localities, roads and landmarks
with approximate coordinates and PIN codes. Search is for a typeahead, so it must cope with what
people type on a phone:

- prefixes, the last word especially (it is still being typed): "kora" finds Koramangala;
- small typos, never in the first letter: "koramangla", "indiranagr";
- spacing: "indira nagar" and "white field" find Indiranagar and Whitefield;
- house numbers and the city's name, which no entry carries: "12 MG Road, Bengaluru" finds MG Road;
- ordinals and abbreviations: "5 block", "5th blk" and "5th Block" are the same words.

A few hundred entries scanned linearly answer in well under a millisecond: no index is needed.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from geo.distance import haversine_m
from geo.textmatch import fold as fold_accents
from geo.textmatch import within_edits

__all__ = ["DEFAULT_GAZETTEER_FILE", "Gazetteer", "Place"]

DEFAULT_GAZETTEER_FILE = Path(__file__).resolve().parent / "data" / "places_bengaluru.csv"
KINDS = ("locality", "road", "landmark")

# Words nobody's name is made of, dropped from queries: the city, the state, and filler.
_STOP = frozenset({"bengaluru", "bangalore", "blr", "karnataka", "india", "near", "opp", "opposite", "the",
                   "of", "and", "in", "at"})
# Abbreviations people type, on both sides of the comparison.
_SYNONYMS = {"rd": "road", "ngr": "nagar", "blk": "block", "stn": "station", "jn": "junction",
             "ft": "feet", "mtr": "metro"}
_ORDINAL = re.compile(r"^(\d+)(st|nd|rd|th)$")
_WORD = re.compile(r"[^\W_]+")
# A typed word this short matches whole words or (as the last word) prefixes only: one or two
# letters with a typo would match everything.
TYPO_FROM = 4
TWO_TYPOS_FROM = 8
# Reverse lookup: a road or landmark this close names the spot ("Near UB City"); a locality
# centre this close says which neighbourhood it is in; farther than that, the spot has no name here.
NEAR_NAMED_M = 600.0
# How much a word matching the neighbourhood (not the name) counts: "mg road ashok nagar" should find
# MG Road, but below a name that has every typed word.
AROUND_WEIGHT = 0.6
NEAR_LOCALITY_M = 4000.0


def fold(text: str) -> str:
    """Lower-case without accents or apostrophes: "St. John's" -> "st johns"."""
    return fold_accents(text.replace("'", "").replace("\u2019", ""))


def words_of(text: str) -> list[str]:
    """Folded words with ordinals and abbreviations normalised: "5th Blk" -> ["5", "block"]."""
    out = []
    for word in _WORD.findall(fold(text)):
        ordinal = _ORDINAL.match(word)
        if ordinal:
            word = ordinal.group(1)
        out.append(_SYNONYMS.get(word, word))
    return out


@dataclass(frozen=True, slots=True)
class Place:
    """A named point a venue can be placed at, ready for an order's address fields."""

    id: str
    name: str
    kind: str          # locality, road, landmark; "nearby" for a reverse lookup; "address" from Google
    label: str         # one line to show: name, neighbourhood, city and PIN code
    line1: str         # what goes in the address line (the customer adds the house number)
    city: str
    postal_code: str | None
    lat: float
    lng: float


@dataclass(frozen=True, slots=True)
class _Entry:
    place: Place
    names: tuple[tuple[str, ...], ...]  # the name and each alias, as words
    compacts: tuple[str, ...]           # the same without spaces: "indiranagar"
    postal_code: str
    around: tuple[str, ...]             # the neighbourhood's words: "100 feet road indiranagar" helps, not needs


def _word_score(typed: str, words: Iterable[str], last: bool) -> float:
    """How well one typed word matches the best of an entry's words (0: not at all)."""
    best = 0.0
    for word in words:
        if typed == word:
            return 1.0
        if word.startswith(typed) and (last or len(typed) >= 3):
            best = max(best, 0.9)
            continue
        if len(typed) >= TYPO_FROM and typed[0] == word[0]:
            limit = 2 if len(typed) >= TWO_TYPOS_FROM else 1
            # The whole word, or (for the word being typed) its beginning, with a typo or two.
            if within_edits(typed, word, limit) or (last and within_edits(typed, word[:len(typed)], limit)):
                best = max(best, 0.7)
    return best


class Gazetteer:
    """Named places of one city, searched by name and by position."""

    def __init__(self, places: list[Place], aliases: dict[str, tuple[str, ...]] | None = None) -> None:
        aliases = aliases or {}
        self.places = places
        self._entries = []
        for place in places:
            names = (place.name, *aliases.get(place.id, ()))
            words = tuple(tuple(words_of(name)) for name in names)
            around = tuple(words_of(place.line1[len(place.name):])) if place.line1.startswith(place.name) else ()
            self._entries.append(_Entry(place, words, tuple("".join(w) for w in words), place.postal_code or "",
                                        around))
        self._localities = [p for p in places if p.kind == "locality"]

    @classmethod
    def load(cls, path: Path | None = None, city: str = "Bengaluru") -> Gazetteer:
        """Read a gazetteer CSV (see the bundled file's header); the bundled one when `path` is None."""
        target = path or DEFAULT_GAZETTEER_FILE
        lines = [line for line in target.read_text(encoding="utf-8").splitlines() if not line.startswith("#")]
        places: list[Place] = []
        aliases: dict[str, tuple[str, ...]] = {}
        seen: set[str] = set()
        for row_number, row in enumerate(csv.DictReader(lines), start=2):
            kind, name = row["kind"].strip(), row["name"].strip()
            if kind not in KINDS or not name:
                raise ValueError(f"gazetteer {target.name}: row {row_number} has no name or an unknown kind {kind!r}")
            lat, lng = float(row["lat"]), float(row["lng"])
            if not (-90 <= lat <= 90 and -180 <= lng <= 180):
                raise ValueError(f"gazetteer {target.name}: row {row_number} is off the globe")
            place_id = "gz:" + "-".join(words_of(name))
            if place_id in seen:
                raise ValueError(f"gazetteer {target.name}: {name!r} appears twice")
            seen.add(place_id)
            locality = (row.get("locality") or "").strip()
            postal = (row.get("postal_code") or "").strip() or None
            line1 = name if not locality or locality in name else f"{name}, {locality}"
            label = ", ".join(part for part in (line1, f"{city} {postal}" if postal else city) if part)
            places.append(Place(id=place_id, name=name, kind=kind, label=label, line1=line1, city=city,
                                postal_code=postal, lat=lat, lng=lng))
            aliases[place_id] = tuple(a.strip() for a in (row.get("aliases") or "").split("|") if a.strip())
        return cls(places, aliases)

    def search(self, text: str, limit: int = 6) -> list[Place]:
        """The places best matching what was typed, best first; [] when nothing does."""
        typed = [w for w in words_of(text) if w not in _STOP]
        if not typed or limit < 1:
            return []
        scored: list[tuple[float, int, int, Place]] = []
        for rank, entry in enumerate(self._entries):
            score = self._score(entry, typed)
            if score > 0:
                scored.append((-score, len(entry.place.name), rank, entry.place))
        scored.sort(key=lambda item: item[:3])
        return [place for *_, place in scored[:limit]]

    def _score(self, entry: _Entry, typed: list[str]) -> float:
        best = 0.0
        joined = "".join(w for w in typed if not w.isdigit())
        lead = next((w for w in typed if not w.isdigit()), "")
        for words, compact in zip(entry.names, entry.compacts, strict=True):
            total, counted, named = 0.0, 0, False
            for index, word in enumerate(typed):
                last = index == len(typed) - 1
                if word.isdigit() and len(word) == 6:
                    score = 1.0 if word == entry.postal_code else 0.0  # a PIN code names an area
                else:
                    score = _word_score(word, words, last)
                    named = named or score > 0
                    if score == 0 and entry.around:
                        # The neighbourhood typed beside the name: a weaker match, never enough alone.
                        score = AROUND_WEIGHT * _word_score(word, entry.around, last)
                if score == 0 and not word.isdigit():
                    total, counted = 0.0, 0
                    break
                # A number nothing here carries is a house or plot number: it does not exclude the
                # entry, but counts against it, so "5 block" ranks the 5th Block above the 6th.
                total += score
                counted += 1
            value = total / counted if total > 0 and (named or not any(w.isalpha() for w in typed)) else 0.0
            # "indira nagar", "white field": the words run together match the name as one.
            if value == 0 and len(joined) >= 4 and (
                    compact.startswith(joined) or (len(joined) >= 6 and joined in compact)):
                value = 0.8
            if value > 0 and lead and words and words[0].startswith(lead):
                value += 0.2  # the name starts the way the query does
            if value > 0 and joined and len(joined) >= len(compact) - 2:
                value += 0.1  # ...and the query is (nearly) all of it: "lalbag" is Lalbagh, not Lalbagh Road
            best = max(best, value)
        return best

    def describe(self, lat: float, lng: float) -> tuple[Place, float] | None:
        """A name for a position: the nearest named road or landmark, else the locality it lies in.

        Returns the place (at the asked position, kind "nearby") and the distance in metres to the
        thing it is named after; None when nothing in the gazetteer is near enough to say.
        """
        if not (math.isfinite(lat) and math.isfinite(lng)):
            return None
        named = self._nearest(lat, lng, [p for p in self.places if p.kind != "locality"])
        nearest_locality = self._nearest(lat, lng, self._localities)
        area, area_m = nearest_locality if nearest_locality else (None, math.inf)
        if area_m > NEAR_LOCALITY_M:
            area = None
        if named is not None and named[1] <= NEAR_NAMED_M:
            anchor, distance = named
            parts = [f"Near {anchor.name}"]
            # The landmark's own neighbourhood ("UB City, Ashok Nagar"), else the nearest one.
            inside = anchor.line1.split(", ", 1)[1] if ", " in anchor.line1 else (area.name if area else None)
            if inside:
                parts.append(inside)
            postal = anchor.postal_code or (area.postal_code if area else None)
        elif area is not None:
            anchor, distance = area, area_m
            parts = [area.name]
            postal = area.postal_code
        else:
            return None
        line1 = ", ".join(parts)
        label = f"{line1}, {anchor.city}" + (f" {postal}" if postal else "")
        return (Place(id=f"near:{anchor.id}", name=anchor.name, kind="nearby", label=label, line1=line1,
                      city=anchor.city, postal_code=postal, lat=lat, lng=lng), distance)

    @staticmethod
    def _nearest(lat: float, lng: float, places: list[Place]) -> tuple[Place, float] | None:
        best: tuple[Place, float] | None = None
        for place in places:
            distance = haversine_m(lat, lng, place.lat, place.lng)
            if best is None or distance < best[1]:
                best = (place, distance)
        return best
