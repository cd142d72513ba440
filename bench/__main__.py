"""`make bench`: every benchmark, one line per goal (`NAME: figure (goal ...) PASS|FAIL`), and bench/RESULTS.md.

Each goal is a ratio measured within one run, so it holds on a shared, noisy machine. Each benchmark is also
a module of its own (`python -m bench.critical_path --help`). A benchmark module offers
`add_arguments(parser)` and `run(options) -> list[Result]`; the runner hands it the options it knows.

`python -m bench [--short] [--only NAME ...] [any benchmark's options, e.g. --soak-seconds 600]`
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path

from bench._harness import PY, ROOT, Result

# (name, module). The order is cheap to dear; the soak goes last.
BENCHMARKS = [
    ("cold", "bench.cold_start"),
    ("localtenant", None),  # bench/bench_localtenant.py, a script: run as its own process
    ("critical", "bench.critical_path"),
    ("throttling", "bench.throttling"),
    ("read", "bench.read_path"),
    ("registry", "bench.registry_scale"),
    ("hostile", "bench.hostile"),
    ("soak", "bench.soak"),
]
# --short: a few minutes in all, for trying the bench out; the figures are noisier.
SHORT = {"runs": 9, "repeats": 1, "provisions": 60, "seconds": 5.0, "soak_seconds": 60.0, "hostile_examples": 30,
         "registrations": 60}
RESULTS = Path(__file__).with_name("RESULTS.md")


def _modules(names: list[str] | None) -> list[tuple[str, str | None]]:
    return [(n, m) for n, m in BENCHMARKS if not names or n in names]


def _options(module, argv: list[str], short: bool) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    module.add_arguments(parser)
    if short:
        parser.set_defaults(**{k: v for k, v in SHORT.items() if any(a.dest == k for a in parser._actions)})
    return parser.parse_known_args(argv)


def _flags(module_name: str) -> list[str]:
    parser = argparse.ArgumentParser(add_help=False)
    importlib.import_module(module_name).add_arguments(parser)
    return [a.option_strings[0] for a in parser._actions]


# A benchmark during which other processes kept more than this share of the machine's cores busy is marked as
# measured under load (the machine is shared: other sessions' test runs, builds).
LOAD_SHARE = 0.15


def _cpu_ticks() -> tuple[int, int]:
    """(busy jiffies of the whole machine, jiffies of this process and all its descendants, living or reaped)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    busy = sum(fields) - fields[3] - (fields[4] if len(fields) > 4 else 0)  # all but idle and iowait
    parents: dict[int, int] = {}
    own: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry.name)] = int(stat[1])
        own[int(entry.name)] = sum(int(v) for v in stat[11:15])  # utime stime cutime cstime
    mine, me = 0, os.getpid()
    for pid, ticks in own.items():
        ancestor = pid
        while ancestor not in (0, 1, me) and ancestor in parents:
            ancestor = parents[ancestor]
        if ancestor == me:
            mine += ticks
    return busy, mine


def _load_note(before: tuple[int, int], after: tuple[int, int], seconds: float) -> str | None:
    """Cores that processes other than the benchmark's kept busy while it ran, when above LOAD_SHARE."""
    others = ((after[0] - before[0]) - (after[1] - before[1])) / os.sysconf("SC_CLK_TCK")
    cores = max(others / seconds, 0.0) if seconds > 0 else 0.0
    if cores <= LOAD_SHARE * (os.cpu_count() or 1):
        return None
    return f"measured under load: other processes kept {cores:.2f} of {os.cpu_count()} cores busy"


def _localtenant() -> list[Result]:
    from bench import bench_localtenant

    done = subprocess.run([PY, str(ROOT / "bench" / "bench_localtenant.py")], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    line = (done.stdout.strip().splitlines() or [done.stderr.strip()[-300:]])[-1]
    figure = line.removeprefix("localtenant overhead: ").removesuffix(" PASS").removesuffix(" FAIL")
    return [Result("localtenant overhead", figure, f"ratio <= {bench_localtenant.GOAL}", done.returncode == 0)]


def _machine() -> list[str]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
                 platform.processor() or "unknown")
    nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    memory = subprocess.run(["free", "-m"], capture_output=True, text=True).stdout.rstrip()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                           text=True).stdout.strip()
    return [f"- CPU: {model}; nproc {nproc}; Python {platform.python_version()} on {platform.platform()}",
            f"- code: commit {commit}{' plus uncommitted changes in the working tree' if dirty else ''}",
            "- memory (`free -m`):", "", "```", memory, "```"]


def write_results(lines: list[str], argv: list[str], seconds: float) -> None:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = ["# Benchmark results", "",
            f"`python -m bench {' '.join(argv)}`".replace(" `", "`") + f" on {now}, {seconds / 60:.1f} min.", "",
            "## Machine", "", *_machine(), "",
            "## Results", "",
            "Every goal is a ratio measured within one run (the machine is shared and noisy). "
            "`(report)` lines have no goal. A line ending `[measured under load: …]` ran while processes other "
            f"than the benchmark's kept more than {LOAD_SHARE:.0%} of the cores busy.", "",
            "```", *lines, "```", ""]
    RESULTS.write_text("\n".join(text))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__, allow_abbrev=False,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--short", action="store_true", help="a few minutes in all; noisier figures")
    parser.add_argument("--only", nargs="+", choices=[n for n, _ in BENCHMARKS], help="run only these")
    parser.add_argument("--no-write", action="store_true", help=f"do not write {RESULTS.name}")
    parser.epilog = "benchmark options:\n" + "\n".join(
        f"  {name}: {' '.join(_flags(module_name))}" for name, module_name in BENCHMARKS
        if module_name)
    ours, rest = parser.parse_known_args(argv)
    started = time.monotonic()
    lines: list[str] = []
    unknown = set(rest)
    plan = []
    failed = False
    for name, module_name in _modules(ours.only):
        if module_name is None:
            plan.append((name, module_name, None, None))
            continue
        module = importlib.import_module(module_name)
        options, left = _options(module, rest, ours.short)
        unknown &= set(left)
        plan.append((name, module_name, module, options))
    flags = sorted(a for a in unknown if a.startswith("-"))
    if flags:
        parser.error(f"no benchmark takes {', '.join(flags)}")
    for name, module_name, module, options in plan:
        before, began = _cpu_ticks(), time.monotonic()
        try:
            if module is None:
                results = _localtenant()
            else:
                results = module.run(options)
        except Exception as error:  # one broken benchmark must not hide the others' lines
            traceback.print_exc()
            results = [Result(name, f"error: {type(error).__name__}: {error}", "runs to the end", False)]
        note = _load_note(before, _cpu_ticks(), time.monotonic() - began)
        failed = failed or any(result.ok is False for result in results)
        for result in results:
            line = result.line() + (f" [{note}]" if note else "")
            print(line, flush=True)
            lines.append(line)
    if not ours.no_write:
        write_results(lines, argv, time.monotonic() - started)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
