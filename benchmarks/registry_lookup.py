"""Registry lookups at 10 thousand and 10 million people: the cost per call should stay flat.

Every registry lookup is a primary-key or index seek, so a registry a thousand
times larger should cost about the same per call (a B-tree one or two levels
deeper).  This script measures that instead of assuming it:

1. generates mock registries with ``scripts/generate_registries.py`` (people, and
   a tenth as many enterprises), cached under ``--cache-dir`` and reused;
2. samples random existing identity numbers, valid numbers that are in no
   registry, and legal representatives' numbers;
3. times, one call at a time on one CPU core, through the shipped connectors:
   ``PopulationRegistry.find_person`` (existing, missing),
   ``EnterpriseRegistry.represented_by``, and ``sso.accounts.verify_real_name``
   (number validation + registry lookup + checks, as registration runs it);
4. prints p50/p99 latency, calls/s (wall clock) and calls per CPU-second (the
   process's own CPU time: what one core gives even when other processes share
   it) per size, then the ratio largest/smallest.

    .venv/bin/python benchmarks/registry_lookup.py                      # 10k and 10M
    .venv/bin/python benchmarks/registry_lookup.py --sizes 10000,1000000 --delete

Ten million people take about 80 s to generate and ~1.8 GB of disk (check
``df -h /tmp``).  Figures are for a warm operating-system page cache (sampling
reads the tables first); SQLite, one process.  It asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a source checkout without installing

from sso import regions  # noqa: E402
from sso.identifiers import resident_id_check_char  # noqa: E402

GENERATOR = ROOT / "scripts" / "generate_registries.py"
DEFAULT_CACHE = Path(tempfile.gettempdir()) / "sso-bench" / "registries"


@dataclass
class Result:
    operation: str
    size: int
    calls: int
    p50_us: float
    p99_us: float
    per_second: float
    per_cpu_second: float


def human(n: int) -> str:
    for unit, scale in (("M", 1_000_000), ("k", 1_000)):
        if n >= scale and n % scale == 0:
            return f"{n // scale}{unit}"
    return str(n)


def pin_to_one_core(cpu: int | None) -> str:
    if not hasattr(os, "sched_setaffinity"):
        return "not pinned (no sched_setaffinity on this platform)"
    allowed = sorted(os.sched_getaffinity(0))
    core = cpu if cpu is not None else allowed[0]
    os.sched_setaffinity(0, {core})
    return f"pinned to CPU {core} (of {len(allowed)} allowed)"


def registry_file(cache: Path, people: int, seed: int) -> Path:
    """The generated registry for ``people`` (made once, then reused)."""
    path = cache / f"registry-{people}-seed{seed}.sqlite3"
    if path.exists():
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            meta = dict(db.execute("SELECT key, value FROM registry_meta"))
        if meta.get("people") == str(people):
            print(f"  reusing {path}", flush=True)
            return path
    cache.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        str(GENERATOR),
        "--people",
        str(people),
        "--enterprises",
        str(max(people // 10, 1)),
        "--out",
        str(path),
        "--seed",
        str(seed),
    ]
    print("  " + " ".join(command), flush=True)
    subprocess.run(command, check=True)
    return path


def samples(path: Path, count: int, rng: random.Random) -> dict[str, list[Any]]:
    """Random inputs: existing people (number, name), valid numbers in no registry, legal reps."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        # ORDER BY random() LIMIT k: one pass with a top-k sorter (seconds at 10M).
        people = db.execute("SELECT id_number, name FROM people ORDER BY random() LIMIT ?", (2 * count,)).fetchall()
        reps = [
            r[0] for r in db.execute("SELECT legal_rep_id_number FROM enterprises ORDER BY random() LIMIT ?", (count,))
        ]
        counties = [c.code for c in regions.counties() if not c.functional_zone]
        missing: list[str] = []
        while len(missing) < count:
            born = date(1930, 1, 1) + timedelta(days=rng.randrange(28_000))
            first17 = f"{rng.choice(counties)}{born:%Y%m%d}{rng.randrange(1, 1000):03d}"
            number = first17 + resident_id_check_char(first17)
            if db.execute("SELECT 1 FROM people WHERE id_number = ?", (number,)).fetchone() is None:
                missing.append(number)
    rng.shuffle(people)
    if len(people) >= 2 * count:
        # Separate people for the two timed passes: the second must not find the first's pages hot.
        existing, verify = people[:count], people[count:]
    else:  # a registry smaller than the sample: draw with replacement
        existing, verify = rng.choices(people, k=count), rng.choices(people, k=count)
    if len(reps) < count:
        reps = rng.choices(reps, k=count)
    return {"existing": existing, "verify": verify, "missing": missing, "reps": reps}


def measure(operation: str, size: int, call: Callable[[Any], Any], inputs: Sequence[Any], warmup: int) -> Result:
    for item in inputs[:warmup]:
        call(item)
    timings = []
    clock = time.perf_counter_ns
    started, cpu_started = clock(), time.process_time_ns()
    for item in inputs:
        t0 = clock()
        call(item)
        timings.append(clock() - t0)
    elapsed = (clock() - started) / 1e9
    cpu = (time.process_time_ns() - cpu_started) / 1e9
    cuts = statistics.quantiles(timings, n=100)
    n = len(inputs)
    return Result(operation, size, n, cuts[49] / 1000, cuts[98] / 1000, n / elapsed, n / cpu)


class SizeBench:
    """One registry size: its inputs, the shipped connectors over it, and a gateway app."""

    def __init__(self, path: Path, size: int, calls: int, seed: int) -> None:
        from sso import create_app
        from sso.config import load_settings
        from sso.connectors.enterprise import EnterpriseRegistry
        from sso.connectors.population import PopulationRegistry
        from sso.connectors.sqlregistry import url_for_path

        self.size = size
        print(f"  sampling {calls} inputs of each kind ...", flush=True)
        self.inputs = samples(path, calls, random.Random(seed))
        url = url_for_path(str(path))
        self.people = PopulationRegistry("population", "人口基础信息库", url)
        self.enterprises = EnterpriseRegistry("enterprise", "法人基础信息库", url)
        self.instance = Path(tempfile.mkdtemp(prefix="sso-bench-instance-"))
        settings = load_settings(
            overrides={
                "issuer": "http://127.0.0.1:5000",
                "development": True,
                "instance_path": str(self.instance),
                "connectors": [
                    {"type": "accounts", "id": "accounts", "name": "账号"},
                    {"type": "population-registry", "id": "population", "name": "人口库", "settings": {"url": url}},
                    {"type": "enterprise-registry", "id": "enterprise", "name": "法人库", "settings": {"url": url}},
                ],
            },
            environ={},
        )
        self.app = create_app(settings)  # verify_real_name finds the registry through the app
        self.warmup = min(500, calls // 10)

    def run(self) -> list[Result]:
        from sso.accounts import VerificationFailed, verify_real_name

        def verify(person: tuple[str, str]) -> None:
            try:
                verify_real_name(person[1], person[0])
            except VerificationFailed:  # deceased or cancelled (1.2 %): still a full lookup
                pass

        inputs, size, warmup = self.inputs, self.size, self.warmup
        results = [
            measure(
                "find_person (existing)", size, lambda p: self.people.find_person(p[0]), inputs["existing"], warmup
            ),
            measure("find_person (missing)", size, self.people.find_person, inputs["missing"], warmup),
            measure("represented_by", size, self.enterprises.represented_by, inputs["reps"], warmup),
        ]
        with self.app.app_context():
            results.append(measure("verify_real_name", size, verify, inputs["verify"], warmup))
        return results

    def close(self) -> None:
        from sso.connectors.sqlregistry import registry_engine

        registry_engine(self.people._url).dispose()  # close the pooled connections to the file
        shutil.rmtree(self.instance, ignore_errors=True)


def median_of_rounds(rounds: list[list[Result]]) -> list[Result]:
    """Per operation and size, the median of each figure over the rounds."""
    grouped: dict[tuple[str, int], list[Result]] = {}
    for result in (r for one in rounds for r in one):
        grouped.setdefault((result.operation, result.size), []).append(result)
    return [
        Result(
            op,
            size,
            runs[0].calls,
            statistics.median(r.p50_us for r in runs),
            statistics.median(r.p99_us for r in runs),
            statistics.median(r.per_second for r in runs),
            statistics.median(r.per_cpu_second for r in runs),
        )
        for (op, size), runs in grouped.items()
    ]


def print_table(results: list[Result], sizes: list[int]) -> None:
    operations = list(dict.fromkeys(r.operation for r in results))
    by = {(r.operation, r.size): r for r in results}
    head = f"{'operation':<24}" + "".join(
        f" | {human(s) + ' p50 µs':>12} {'p99 µs':>8} {'calls/s':>9} {'/CPU-s':>8}" for s in sizes
    )
    small, large = sizes[0], sizes[-1]
    if len(sizes) > 1:
        head += f" | {human(large) + '/' + human(small) + ' p50':>13} {'calls/s':>8} {'/CPU-s':>7}"
    print()
    print(head)
    print("-" * len(head))
    for op in operations:
        line = f"{op:<24}"
        for s in sizes:
            r = by[(op, s)]
            line += f" | {r.p50_us:>12.1f} {r.p99_us:>8.1f} {r.per_second:>9,.0f} {r.per_cpu_second:>8,.0f}"
        if len(sizes) > 1:
            a, b = by[(op, small)], by[(op, large)]
            line += (
                f" | {b.p50_us / a.p50_us:>13.2f} {b.per_second / a.per_second:>8.2f}"
                f" {b.per_cpu_second / a.per_cpu_second:>7.2f}"
            )
        print(line)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,10000000", help="people per registry, comma-separated")
    parser.add_argument("--calls", type=int, default=20_000, help="timed calls per operation and size")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help="where generated registries live")
    parser.add_argument("--rounds", type=int, default=3, help="rounds over all sizes (median reported)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cpu", type=int, default=None, help="core to pin to (default: the first allowed)")
    parser.add_argument("--delete", action="store_true", help="delete the generated registries afterwards")
    args = parser.parse_args(argv)
    sizes = sorted(int(s.replace("_", "")) for s in args.sizes.split(","))

    print(pin_to_one_core(args.cpu))
    print(f"Python {sys.version.split()[0]}, SQLite {sqlite3.sqlite_version}, {os.cpu_count()} CPUs")
    benches, paths = [], []
    for size in sizes:
        print(f"registry of {size:,} people:", flush=True)
        path = registry_file(args.cache_dir, size, args.seed)
        paths.append(path)
        print(f"  {path.stat().st_size / 1e6:,.0f} MB", flush=True)
        benches.append(SizeBench(path, size, args.calls, args.seed))
    # Sizes interleaved round by round (alternating order), so noise from a shared
    # machine falls on every size alike; the median of the rounds is reported.
    rounds = []
    for number in range(args.rounds):
        print(f"round {number + 1}/{args.rounds} ...", flush=True)
        ordered = benches if number % 2 == 0 else benches[::-1]
        rounds.append([r for bench in ordered for r in bench.run()])
    for bench in benches:
        bench.close()
    print(f"\nmedian of {args.rounds} round(s), {args.calls} calls per operation, size and round")
    print_table(median_of_rounds(rounds), sizes)
    if args.delete:
        for path in paths:
            # sso.db turns every SQLite connection of the process to WAL, hence the sidecars.
            for suffix in ("", "-wal", "-shm", "-journal"):
                path.with_name(path.name + suffix).unlink(missing_ok=True)
        print(f"\ndeleted {len(paths)} registry file(s) under {args.cache_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
