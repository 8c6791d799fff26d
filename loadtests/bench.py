"""`make bench`: every performance figure of the product, each next to its target and, where it
means something, to a baseline measured in the same run on the same machine.

    python -m loadtests.bench                  # everything (about 5-6 minutes on 2 cores)
    python -m loadtests.bench --quick          # smaller and shorter (about 1.5 minutes)
    python -m loadtests.bench --only ingest --only matching

It starts its own Redis and nx-27017 on free ports, app processes (`python -m partypilot serve`),
baseline servers and load-generator processes, and stops all of them at the end, also on Ctrl-C.
Results: a table on stdout and .data/bench/results.json.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtests.report import ScenarioResult, format_table, write_json

logger = logging.getLogger("loadtests.bench")

DEFAULT_OUTPUT = Path(".data/bench/results.json")


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    run: Callable[[Any, ScenarioResult], None]


def scenarios() -> list[Scenario]:
    from loadtests import scenarios as s

    return [
        Scenario("catalog", "REST catalog: GET /api/packages throughput (one app process)", s.catalog),
        Scenario("orders", "REST orders: POST /api/orders latency at 50 requests/s", s.orders),
        Scenario("ingest", "Socket.IO location ingest into Redis", s.ingest),
        Scenario("connections", "Partner sockets held by one process, memory per connection", s.connections),
        Scenario("matching", "Order dispatchable -> first offer on the partner's socket", s.matching),
        Scenario("fanout", "Fleet fan-out to admins and tracking customers", s.fanout),
    ]


SCENARIO_NAMES = ("catalog", "orders", "ingest", "connections", "matching", "fanout")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m loadtests.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", choices=SCENARIO_NAMES, metavar="NAME",
                        help=f"run only this scenario (repeatable): {', '.join(SCENARIO_NAMES)}")
    parser.add_argument("--quick", action="store_true", help="smaller loads and shorter windows (~2 minutes)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON results file")
    parser.add_argument("--generators", type=int, default=0,
                        help="load-generator processes per scenario (default: chosen per scenario)")
    parser.add_argument("--processes", type=int, default=2,
                        help="app processes where a scenario shows the deployment shape (default: 2, one per core)")
    parser.add_argument("-v", "--verbose", action="store_true", help="progress logging")
    return parser


def selected(names: Sequence[str] | None) -> list[Scenario]:
    wanted = set(names or SCENARIO_NAMES)
    return [s for s in scenarios() if s.name in wanted]


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    # SIGTERM behaves like Ctrl-C, so the finally blocks below stop everything we started.
    signal.signal(signal.SIGTERM, _interrupt)
    from loadtests.harness import Stack, raise_nofile_limit
    from loadtests.scenarios import Context

    raise_nofile_limit()
    results: list[ScenarioResult] = []
    started = time.monotonic()
    interrupted = False
    stack = Stack.create(log_dir=args.output.parent / "logs")
    try:
        ctx = Context(stack=stack, quick=args.quick, generators=args.generators, processes=max(1, args.processes))
        for scenario in selected(args.only):
            result = ScenarioResult(scenario.name, scenario.title)
            results.append(result)
            _progress(f"== {scenario.name}: {scenario.title}")
            t0 = time.monotonic()
            try:
                scenario.run(ctx, result)
            except KeyboardInterrupt:
                result.error = "interrupted"
                interrupted = True
                break
            except Exception as exc:
                logger.debug("scenario %s failed", scenario.name, exc_info=True)
                where = traceback.extract_tb(exc.__traceback__)[-1]
                result.error = f"{type(exc).__name__}: {exc} (at {Path(where.filename).name}:{where.lineno})"
            finally:
                result.seconds = time.monotonic() - t0
                ctx.cleanup()
            _progress(f"   {scenario.name}: {result.status} in {result.seconds:.0f} s")
    except KeyboardInterrupt:
        interrupted = True
    finally:
        stack.close()
    meta = {"quick": args.quick, "seconds": round(time.monotonic() - started, 1), "interrupted": interrupted,
            "cpus": _cpus()}
    write_json(args.output, results, meta)
    sys.stdout.write("\n" + format_table(results) + "\n")
    sys.stdout.write(f"\nresults written to {args.output} ({meta['seconds']:.0f} s)\n")
    if interrupted:
        return 130
    return 1 if any(r.status == "error" for r in results) else 0


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


def _progress(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


if __name__ == "__main__":
    raise SystemExit(main())
