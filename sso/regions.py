"""County-level administrative divisions (GB/T 2260), shipped inside the package.

``sso/data/regions.csv`` (columns ``code,name,prefecture,province``) is derived
from the National Bureau of Statistics division list (``areas.csv``,
``cities.csv`` and ``provinces.csv`` of modood/Administrative-divisions-of-China,
2024-11 release, WTFPL).  It is copied into the package so that validation
never depends on files outside the installed wheel.

``prefecture`` is empty where the source only has a placeholder grouping
(``市辖区``, ``县``, ``省直辖县级行政区划``...): the districts of the four
municipalities and the counties governed directly by a province.  Leaving it
empty lets callers build natural addresses (``北京市东城区``, not
``北京市市辖区东城区``).

A current list cannot know abolished codes (110103 崇文区, 110104 宣武区...)
that remain on identity numbers issued before a reorganisation; see
:func:`sso.identifiers.validate_resident_id`.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cache
from pathlib import Path

# A plain path next to this module rather than importlib.resources: ``sso`` may
# be an implicit namespace package in a source checkout, and the file is small.
DATA_FILE = Path(__file__).with_name("data") / "regions.csv"


@dataclass(frozen=True, slots=True)
class Region:
    """One county-level division."""

    code: str  # six digits, e.g. "110105"
    name: str  # e.g. "朝阳区"
    prefecture: str  # e.g. "石家庄市"; "" under a municipality or a province directly
    province: str  # e.g. "北京市"

    @property
    def full_name(self) -> str:
        """Province, prefecture and county as written in an address (no repeats)."""
        parts = [self.province]
        for part in (self.prefecture, self.name):
            # 东莞市 is both the prefecture and its own county-level row.
            if part and part != parts[-1]:
                parts.append(part)
        return "".join(parts)

    @property
    def functional_zone(self) -> bool:
        """A statistical-only zone (development zone, new area), not a GB/T 2260 county.

        The Bureau of Statistics numbers these 71-79 within their prefecture
        (130171 石家庄高新技术产业开发区); in the shipped data every such code is a
        zone.  Validation accepts them, but realistic data should not invent
        residents registered there.
        """
        return self.code[4] == "7"


@cache
def _by_code() -> dict[str, Region]:
    # Loaded on first use, once per process: importing sso must stay cheap.
    with DATA_FILE.open(encoding="utf-8", newline="") as handle:
        regions = {
            row["code"]: Region(row["code"], row["name"], row["prefecture"], row["province"])
            for row in csv.DictReader(handle)
        }
    if not regions:
        raise RuntimeError(f"no regions in {DATA_FILE}")
    return regions


def county(code: str) -> Region | None:
    """The county-level division with this six-digit code, or None."""
    return _by_code().get(code)


def is_county(code: str) -> bool:
    """Whether ``code`` is a current county-level division code."""
    return code in _by_code()


@cache
def counties() -> tuple[Region, ...]:
    """Every county-level division, sorted by code (a tuple: the cache is shared)."""
    return tuple(sorted(_by_code().values(), key=lambda region: region.code))


@cache
def higher_level_codes() -> frozenset[str]:
    """Province (``xx0000``) and prefecture (``xxxx00``) codes implied by the counties.

    Organisations registered by a provincial or city administration carry these
    in their credit code, so credit-code validation accepts them too.
    """
    codes: set[str] = set()
    for code in _by_code():
        codes.add(code[:2] + "0000")
        codes.add(code[:4] + "00")
    return frozenset(codes)
