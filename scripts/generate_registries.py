#!/usr/bin/env python3
"""Write a mock population registry and enterprise legal-person registry (SQLite).

    python scripts/generate_registries.py --people N --enterprises M --out PATH.sqlite3 [--seed S]

Every resident identity number and credit code is valid (current county codes,
real dates, correct check characters), names and addresses look real, and the
fixed records of ``sso.connectors.demo_data`` come first.  The same seed and
arguments give the same database on the same Python version.

Speed matters (ten million people in minutes on one core), hence:
- per-field values are drawn for a whole county at once with ``random.choices``
  and ``random.sample`` (C loops), and strings are assembled from precomputed
  tables, including partial check-character sums per region, date and sequence;
- people are generated county by county in ascending identity-number order, so
  the WITHOUT ROWID primary key is filled by appending, never by page splits;
- plain sqlite3, one transaction, no journal, no fsync, indexes built at the end.
  A crash therefore leaves garbage, so the file is written beside the target and
  renamed into place only when complete.
"""

from __future__ import annotations

import argparse
import bisect
import os
import re
import sqlite3
import sys
import time
from dataclasses import astuple, dataclass
from datetime import date, timedelta
from itertools import accumulate, repeat
from pathlib import Path
from random import Random

try:
    from sso import identifiers, regions
except ModuleNotFoundError:  # a source checkout, run as a script: add the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from sso import identifiers, regions
from sso.connectors import demo_data

# A fixed "today" so that the output depends on the seed only, not the clock.
AS_OF = date(2025, 6, 30)
BIRTH_FIRST, BIRTH_LAST = date(1930, 1, 1), date(2008, 12, 31)
SEQUENCES = 999  # sequence codes 001-999: odd for men, even for women

# Surname and per-mille frequency (approximately the 2020 census ranking).
_SURNAMES = (
    "王71 李70 张67 刘54 陈46 杨31 黄21 赵20 吴20 周19 徐15 孙15 马13 朱13 胡12 郭12 何11 "
    "林10 高10 罗9 郑8 梁8 谢7 宋6 唐6 许6 韩6 冯5 邓5 曹5 彭5 曾5 肖5 田4 董4 袁4 潘4 于4 "
    "蒋4 蔡4 余4 杜4 叶4 程4 苏3 魏3 吕3 丁3 任3 沈3 姚3 卢3 姜3 崔3 钟3 谭3 陆3 汪3 范3 "
    "金3 石3 廖3 贾3 夏2 韦2 付2 方2 白2 邹2 孟2 熊2 秦2 邱2 江2 尹2 薛2 闫2 段2 雷2 侯2 "
    "龙2 史2 陶2 黎2 贺2 顾2 毛2 郝2 龚2 邵2 万2 钱2 严2 武2 戴2 覃1 莫1 孔1 向1 汤1 欧阳1"
)
_SURNAME_PAIRS = re.findall(r"([^\s\d]+)(\d+)", _SURNAMES)
SURNAMES = [name for name, _ in _SURNAME_PAIRS]
SURNAME_CUM = list(accumulate(int(weight) for _, weight in _SURNAME_PAIRS))
_SHARED_FIRST = "子文明晓小建国海春秋一天思宇玉金永新嘉家佳"
_MALE = "伟强磊军勇杰涛斌超刚平辉鹏华飞鑫波宁浩凯健俊帆帅旭晨博志峰龙阳林东成振兴德荣亮学庆鸿轩泽睿"
_FEMALE = "芳娜敏静丽艳娟霞秀英玲燕萍红颖琳雪慧倩婷晶梅兰凤洁琴云莉璐欣悦怡思雨涵诗梦瑶"


def _given_names(own: str) -> tuple[list[str], list[int]]:
    # One-character given names are about a fifth of the population.
    firsts = _SHARED_FIRST + own
    names = list(own) + [a + b for a in firsts for b in own]
    # len(firsts) per single character against 4 per pair: singles get 1/5 in total.
    weights = [len(firsts)] * len(own) + [4] * (len(names) - len(own))
    return names, list(accumulate(weights))


MALE_GIVEN, MALE_CUM = _given_names(_MALE)
FEMALE_GIVEN, FEMALE_CUM = _given_names(_FEMALE)
# Mobile prefixes in use on the mainland (China Mobile, Unicom, Telecom, Broadnet).
PHONE_PREFIXES = [str(p) for p in (*range(130, 140), 145, 147, 149, *range(150, 154))] + [
    str(p) for p in (*range(155, 160), 166, 170, 171, 173, 175, 176, 177, 178, *range(180, 190))
] + ["191", "192", "193", "195", "196", "197", "198", "199"]
_STREET_WORDS = (
    "人民 解放 中山 建设 和平 新华 胜利 文化 长江 黄河 北京 朝阳 光明 友谊 "
    "青年 花园 东风 工业 学府 滨河 迎宾 幸福 振兴 团结 府前"
)
STREETS = [w + "路" for w in _STREET_WORDS.split()] + ["人民大街", "中心大道"]
HOUSE_NUMBERS = [f"{n}号" for n in range(1, 300)]
APARTMENTS = [""] + [f"{b}栋{u}单元{f}{r:02d}室" for b in range(1, 21) for u in (1, 2, 3)
                     for f in range(1, 19) for r in (1, 2)]
PERSON_STATUSES, PERSON_STATUS_CUM = ("normal", "deceased", "cancelled"), (988, 998, 1000)

_TRADE_CHARS = "华信恒通鼎盛天宏远泰瑞祥安达中兴新源博创金诚合力汇丰嘉禾众联东方明德亿康"
TRADE_PAIRS = [a + b for a in _TRADE_CHARS for b in _TRADE_CHARS if a != b]  # 字号
INDUSTRIES = ["科技", "信息技术", "网络科技", "贸易", "商贸", "建筑工程", "建材", "餐饮管理",
              "文化传媒", "物流", "食品", "医药", "农业开发", "环保科技", "机械设备", "电子",
              "房地产开发", "企业管理咨询", "教育咨询", "装饰工程"]
COMPANY_SUFFIXES, COMPANY_SUFFIX_CUM = ("有限公司", "有限责任公司", "股份有限公司"), (80, 96, 100)
SHOPS = ["便利店", "小吃店", "五金店", "理发店", "服装店", "水果店", "烟酒商行",
         "汽车修理部", "餐馆"]
COOPS = ["蔬菜种植", "果树种植", "生猪养殖", "茶叶", "农机服务", "中药材种植", "水产养殖"]
ORG_TYPE_CHARS, ORG_TYPE_CUM = ("1", "2", "3"), (85, 97, 100)
ENTERPRISE_STATUSES, ENTERPRISE_STATUS_CUM = ("active", "revoked", "cancelled"), (90, 96, 100)
_ORG_CHARS = identifiers.CREDIT_ALPHABET  # the body must also be legal in a credit code

# GB 11643 again, split into partial sums below; the tests validate every number.
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK_VALUES = "10X98765432"

SCHEMA = """
CREATE TABLE people (
    id_number TEXT PRIMARY KEY, name TEXT NOT NULL, sex TEXT NOT NULL,
    birth_date TEXT NOT NULL, region_code TEXT NOT NULL, phone TEXT NOT NULL,
    address TEXT NOT NULL, status TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE enterprises (
    credit_code TEXT PRIMARY KEY, name TEXT NOT NULL, org_type TEXT NOT NULL,
    region_code TEXT NOT NULL, legal_rep_name TEXT NOT NULL,
    legal_rep_id_number TEXT NOT NULL, status TEXT NOT NULL, registered_on TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE registry_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
"""
INDEXES = "CREATE INDEX enterprises_legal_rep ON enterprises (legal_rep_id_number);"


def _digit_sum(digits: str, weights: tuple[int, ...]) -> int:
    return sum(int(d) * w for d, w in zip(digits, weights, strict=True))


@dataclass(frozen=True)
class Stats:
    people: int
    enterprises: int
    seconds: float


@dataclass(frozen=True, slots=True)  # slots: a million of these for large runs
class _Rep:
    """A generated person eligible as a legal representative."""

    name: str
    id_number: str
    birth_date: date


class _PeopleTables:
    """Strings and partial check-character sums per birth date and per sequence code."""

    def __init__(self) -> None:
        days = (BIRTH_LAST - BIRTH_FIRST).days + 1
        dates = [BIRTH_FIRST + timedelta(days=i) for i in range(days)]
        self.date_digits = [d.strftime("%Y%m%d") for d in dates]
        self.date_iso = [d.isoformat() for d in dates]
        self.date_sum = [_digit_sum(s, _ID_WEIGHTS[6:14]) for s in self.date_digits]
        # Index s stands for sequence code s + 1, so that 000 is never issued.
        self.seq_digits = [f"{s + 1:03d}" for s in range(SEQUENCES)]
        self.seq_sum = [_digit_sum(s, _ID_WEIGHTS[14:17]) for s in self.seq_digits]
        self.seq_sex = ["male" if (s + 1) % 2 else "female" for s in range(SEQUENCES)]
        self.key_space = range(days * SEQUENCES)  # one key = one (birth date, sequence)


def _person_key(tables: _PeopleTables, id_number: str) -> int:
    day = date.fromisoformat(
        f"{id_number[6:10]}-{id_number[10:12]}-{id_number[12:14]}"
    ) - BIRTH_FIRST
    return day.days * SEQUENCES + int(id_number[14:17]) - 1


def _home_counties() -> tuple[regions.Region, ...]:
    # Real divisions only: nobody's household is registered in a statistical zone.
    return tuple(c for c in regions.counties() if not c.functional_zone)


def _region_counts(rng: Random, counties: tuple[regions.Region, ...], total: int) -> list[int]:
    # Urban districts are on average more populous than counties and county-level
    # cities (weight 3:2); a proportional split plus a random remainder keeps totals exact.
    weights = [3 if c.name.endswith("区") else 2 for c in counties]
    weight_sum = sum(weights)
    counts = [total * w // weight_sum for w in weights]
    for index in rng.choices(range(len(counties)), weights=weights, k=total - sum(counts)):
        counts[index] += 1
    return counts


def _generate_people(
    db: sqlite3.Connection, rng: Random, total: int, wanted_reps: int, batch_size: int
) -> list[_Rep]:
    """Insert ``total`` random people; return a random sample of adult living ones."""
    tables = _PeopleTables()
    counties = _home_counties()
    counts = _region_counts(rng, counties, total)
    # Keys of the demo people, so that no generated number collides with one.
    reserved: dict[str, set[int]] = {}
    for person in demo_data.DEMO_PEOPLE:
        reserved.setdefault(person.region_code, set()).add(_person_key(tables, person.id_number))
    # Which people (by generation order) become legal-representative candidates:
    # chosen up front so that the hot loop needs no per-record test.
    candidates = sorted(rng.sample(range(total), min(total, 2 * wanted_reps + 16)))
    reps: list[_Rep] = []
    # 19, not 18: leaves every representative at least a year of adulthood to register in.
    adult_before = AS_OF.replace(year=AS_OF.year - 19).isoformat()
    insert = "INSERT INTO people VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    batch: list[tuple[str, ...]] = []
    done = 0
    for county, n in zip(counties, counts, strict=True):
        if not n:
            continue
        excluded = reserved.get(county.code, set())
        keys = rng.sample(tables.key_space, n + len(excluded))
        keys = sorted([k for k in keys if k not in excluded][:n])  # ascending identity numbers
        pairs = [divmod(k, SEQUENCES) for k in keys]
        prefix = county.code
        region_sum = _digit_sum(prefix, _ID_WEIGHTS[:6])
        dd, ds, sd, ss = tables.date_digits, tables.date_sum, tables.seq_digits, tables.seq_sum
        ids = [f"{prefix}{dd[d]}{sd[s]}{_ID_CHECK_VALUES[(region_sum + ds[d] + ss[s]) % 11]}"
               for d, s in pairs]
        sexes = [tables.seq_sex[s] for _, s in pairs]
        births = [tables.date_iso[d] for d, _ in pairs]
        names = [
            surname + (male if sex == "male" else female)
            for surname, sex, male, female in zip(
                rng.choices(SURNAMES, cum_weights=SURNAME_CUM, k=n), sexes,
                rng.choices(MALE_GIVEN, cum_weights=MALE_CUM, k=n),
                rng.choices(FEMALE_GIVEN, cum_weights=FEMALE_CUM, k=n), strict=True)
        ]
        phones = [f"{p}{t:08d}" for p, t in zip(
            rng.choices(PHONE_PREFIXES, k=n), rng.choices(range(100_000_000), k=n), strict=True)]
        place = county.full_name
        addresses = [f"{place}{s}{h}{a}" for s, h, a in zip(
            rng.choices(STREETS, k=n), rng.choices(HOUSE_NUMBERS, k=n),
            rng.choices(APARTMENTS, k=n), strict=True)]
        statuses = rng.choices(PERSON_STATUSES, cum_weights=PERSON_STATUS_CUM, k=n)
        rows = list(zip(ids, names, sexes, births, repeat(prefix, n), phones, addresses,
                        statuses, strict=True))
        lo, hi = bisect.bisect_left(candidates, done), bisect.bisect_left(candidates, done + n)
        for index in candidates[lo:hi]:
            row = rows[index - done]
            if row[7] == "normal" and row[3] < adult_before:
                reps.append(_Rep(row[1], row[0], date.fromisoformat(row[3])))
        done += n
        batch.extend(rows)
        if len(batch) >= batch_size:
            db.executemany(insert, batch)
            batch.clear()
    if batch:
        db.executemany(insert, batch)
    return reps


def _organisation_code(rng: Random, used: set[str]) -> str:
    while True:
        # Codes issued since 2015 mostly start with "MA"; older ones are digits.
        if rng.random() < 0.6:
            body = "MA" + "".join(rng.choices(_ORG_CHARS, k=6))
        else:
            body = f"{rng.randrange(10_000_000, 100_000_000)}"
        code = body + identifiers.organisation_code_check_char(body)
        if code not in used:
            used.add(code)
            return code


def _city_word(county: regions.Region) -> str:
    # Company names start with the city: 北京, 石家庄, or the county-level city.
    for name in (county.prefecture or county.province, county.name):
        if name.endswith("市"):
            return name[:-1]
    return county.prefecture or county.name


def _generate_enterprises(
    db: sqlite3.Connection, rng: Random, total: int, reps: list[_Rep], batch_size: int
) -> None:
    counties = _home_counties()
    city_words = {c.code: _city_word(c) for c in counties}
    used = {e.credit_code[8:17] for e in demo_data.DEMO_ENTERPRISES}
    earliest = date(1993, 1, 1)  # the Company Law; older firms re-registered since
    # One bulk draw per field (C loops) instead of several calls per record.
    chosen = rng.choices(reps, k=total)
    types = rng.choices(ORG_TYPE_CHARS, cum_weights=ORG_TYPE_CUM, k=total)
    statuses = rng.choices(ENTERPRISE_STATUSES, cum_weights=ENTERPRISE_STATUS_CUM, k=total)
    # Most people register their business where they live.
    at_home = rng.choices((True, False), cum_weights=(6, 10), k=total)
    elsewhere = rng.choices(counties, k=total)
    trades = rng.choices(TRADE_PAIRS, k=total)
    industries = rng.choices(INDUSTRIES, k=total)
    suffixes = rng.choices(COMPANY_SUFFIXES, cum_weights=COMPANY_SUFFIX_CUM, k=total)
    shops = rng.choices(SHOPS, k=total)
    coops = rng.choices(COOPS, k=total)
    insert = "INSERT INTO enterprises VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    batch: list[tuple[str, ...]] = []
    for i, (rep, org_type) in enumerate(zip(chosen, types, strict=True)):
        own = regions.county(rep.id_number[:6])
        county = own if own is not None and at_home[i] else elsewhere[i]
        first17 = f"9{org_type}{county.code}{_organisation_code(rng, used)}"
        credit_code = first17 + identifiers.credit_code_check_char(first17)
        if org_type == "1":
            name = f"{city_words[county.code]}{trades[i]}{industries[i]}{suffixes[i]}"
        elif org_type == "2":
            name = f"{county.name}{trades[i]}{shops[i]}"
        else:
            name = f"{county.name}{trades[i]}{coops[i]}专业合作社"
        adult = rep.birth_date.replace(year=rep.birth_date.year + 18, day=1)
        first_day = max(earliest, adult).toordinal()
        registered = date.fromordinal(
            first_day + int(rng.random() * (AS_OF.toordinal() - first_day + 1))
        )
        batch.append((
            credit_code, name, identifiers.BUSINESS_ORG_TYPES[org_type], county.code,
            rep.name, rep.id_number, statuses[i], registered.isoformat(),
        ))
        if len(batch) >= batch_size:
            db.executemany(insert, batch)
            batch.clear()
    db.executemany(insert, batch)


def generate(
    out: Path, people: int, enterprises: int, seed: int = 0, batch_size: int = 100_000
) -> Stats:
    """Write the registries to ``out`` (replaced atomically); demo records come on top."""
    if people < 0 or enterprises < 0:
        raise ValueError("counts must not be negative")
    started = time.perf_counter()
    rng = Random(seed)
    partial = out.with_name(out.name + ".partial")
    partial.unlink(missing_ok=True)
    # isolation_level=None: we issue BEGIN/COMMIT ourselves, one transaction.
    db = sqlite3.connect(partial, isolation_level=None)
    try:
        for pragma in ("journal_mode=OFF", "synchronous=OFF", "locking_mode=EXCLUSIVE",
                       "temp_store=MEMORY", "cache_size=-262144"):
            db.execute(f"PRAGMA {pragma}")
        db.execute("BEGIN")
        # Statement by statement: executescript() would COMMIT the open transaction.
        for statement in SCHEMA.split(";"):
            if statement.strip():
                db.execute(statement)
        db.executemany("INSERT INTO people VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       [astuple(p) for p in demo_data.DEMO_PEOPLE])
        db.executemany("INSERT INTO enterprises VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       [astuple(e) for e in demo_data.DEMO_ENTERPRISES])
        reps = _generate_people(db, rng, people, enterprises, batch_size)
        citizen = demo_data.DEMO_CITIZEN  # keeps the pool non-empty for tiny runs
        reps.append(_Rep(citizen.name, citizen.id_number, date.fromisoformat(citizen.birth_date)))
        _generate_enterprises(db, rng, enterprises, reps, batch_size)
        db.execute(INDEXES)
        meta = {"seed": seed, "people": people, "enterprises": enterprises,
                "as_of": AS_OF.isoformat(), "demo_records": "sso.connectors.demo_data"}
        db.executemany("INSERT INTO registry_meta VALUES (?, ?)",
                       [(k, str(v)) for k, v in meta.items()])
        db.execute("COMMIT")
    finally:
        db.close()
    os.replace(partial, out)
    return Stats(people + len(demo_data.DEMO_PEOPLE),
                 enterprises + len(demo_data.DEMO_ENTERPRISES), time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--people", type=int, required=True,
                        help="random people to generate, besides the demo records")
    parser.add_argument("--enterprises", type=int, required=True,
                        help="random enterprises to generate, besides the demo records")
    parser.add_argument("--out", type=Path, required=True, help="SQLite file to (re)write")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--batch-size", type=int, default=100_000, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    stats = generate(args.out, args.people, args.enterprises, args.seed, args.batch_size)
    rate = stats.people / stats.seconds if stats.seconds else 0.0
    print(f"wrote {stats.people} people and {stats.enterprises} enterprises to {args.out} "
          f"in {stats.seconds:.1f}s ({rate:,.0f} people/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
