"""The benchmark suite, in one command.

    python -m bench --quick          # under 3 minutes, into bench/results/quick/ (not committed)
    python -m bench                  # the full run (under 15 minutes once the 100k store is cached)
    python -m bench --only relay,idle
    python -m bench.report           # re-render summary and plots from the last full run's results

Writes `bench/results/<suite>.json`, `bench/results/summary.md` (printed too: medians, targets and ratios
against the baselines measured in the same run) and the plots docs/performance.md shows. Everything runs on
loopback; each app under test, the fake upstream and the load generator are separate processes.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shlex
import subprocess
import sys
import time
import traceback
from typing import Any

from bench import kb, machine, report
from bench.context import FULL, QUICK, ROOT, Bench

ORDER = ["embedding", "retrieval", "ingestion", "coldstart", "ttfc", "relay", "idle", "profile"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the short run (< 3 min)")
    parser.add_argument("--only", default="", help=f"comma-separated suites among {','.join(ORDER)}")
    parser.add_argument("--relay-streams", default="", help="override the relay stream counts, e.g. 150,200")
    parser.add_argument("--relay-apps", default="", help="override the relay apps, e.g. zantara,seed-style")
    parser.add_argument("--profile-streams", type=int, default=0, help="streams relayed while profiling")
    parser.add_argument(
        "--label",
        default="",
        help="an exploratory run: save <suite>@<label>.json, no summary (not committed)",
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    mode = "quick" if args.quick else "full"
    params: dict[str, Any] = json.loads(json.dumps(QUICK if args.quick else FULL))
    if args.relay_streams:
        params["relay"]["streams"] = [int(n) for n in args.relay_streams.split(",")]
    if args.relay_apps:
        params["relay"]["apps"] = args.relay_apps.split(",")
    if args.profile_streams:
        params["profile_streams"] = args.profile_streams
    only = [s for s in args.only.split(",") if s]
    unknown = set(only) - set(ORDER)
    if unknown:
        parser.error(f"unknown suite(s): {', '.join(sorted(unknown))}")
    suites = [s for s in ORDER if not only or s in only]
    if not params["profile"] and "profile" in suites and "profile" not in only:
        suites.remove("profile")
    command = "python -m bench" + (
        ""
        if argv is None and len(sys.argv) == 1
        else " " + shlex.join(sys.argv[1:] if argv is None else argv)
    )
    bench = Bench(mode, params, command, label=args.label)
    load_start = machine.load()
    bench.log(f"{mode} run: {', '.join(suites)} on {os.cpu_count()} cores ({machine.cpu_model()})")

    bench.log(f"knowledge bases: {params['kb_sizes']} chunks (built once, cached in bench/.cache/kb)")
    t = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "bench.kb", *map(str, params["kb_sizes"])], check=True, timeout=3600
    )
    kb_s = time.monotonic() - t
    kb_info = {
        str(s): {k: v for k, v in (kb.built(s) or {}).items() if k != "batches"} for s in params["kb_sizes"]
    }

    errors: dict[str, str] = {}
    for name in suites:
        module = importlib.import_module(f"bench.suites.{name}")
        started = time.monotonic()
        try:
            data = module.run(bench)
        except Exception as exc:
            errors[name] = f"{type(exc).__name__}: {exc}"
            bench.log(f"{name} FAILED: {errors[name][:2000]}")
            traceback.print_exc()
            continue
        data["duration_s"] = round(time.monotonic() - started, 1)
        bench.save(name, data)
        bench.log(f"{name} done in {data['duration_s']} s")

    # A partial run (`--only`) must not replace the record of the full run whose other figures remain.
    bench.save(
        "run-partial" if only else "run",
        {
            "suites": suites,
            "errors": errors,
            "kb": kb_info,
            "kb_build_s": round(kb_s, 1),
            "load_start": load_start,
            "load_end": machine.load(),
            "duration_s": round(time.monotonic() - bench.started, 1),
            "params": params,
        },
    )
    if args.label:
        bench.log(f"results saved as {bench.results.relative_to(ROOT)}/<suite>@{args.label}.json")
        return 1 if errors else 0
    print(report.write(bench.results))
    bench.log(f"wrote {bench.results.relative_to(ROOT)}/summary.md and the plots")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
