"""How fast the command line answers: `reciprocam --help`, `reciprocam explain --help` and a
mistyped option, each a fresh `python -m reciprocam` process, over `python -c pass` (the
interpreter's own start), timed interleaved (medians). The goal: --help under 3x `python -c
pass`, which only a parser that imports no torch can meet.

    python benchmarks/bench_cli_startup.py [--repeats 20]

Writes benchmarks/results/cli_startup.json; exits 1 if --help misses the goal.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from common import machine, time_interleaved, write_results

GOAL = 3.0

# What each timed process runs, and the exit code it must give.
COMMANDS = {
    "python -c pass": (["-c", "pass"], 0),
    "reciprocam --help": (["-m", "reciprocam", "--help"], 0),
    "reciprocam explain --help": (["-m", "reciprocam", "explain", "--help"], 0),
    "reciprocam explain photo.jpg --top many": (
        ["-m", "reciprocam", "explain", "photo.jpg", "--top", "many"],
        2,
    ),
}


# As an installed package starts: with its bytecode cached (pip compiles it on install; here
# the untimed warm-up runs write it), even where the environment turns that off.
ENVIRONMENT = {
    name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"
}


def start(arguments: list[str], code: int) -> None:
    """One fresh interpreter running `arguments`, checked to exit with `code`."""
    result = subprocess.run(
        [sys.executable, *arguments],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=ENVIRONMENT,
    )
    if result.returncode != code:
        raise SystemExit(f"{' '.join(arguments)} exited with {result.returncode}, not {code}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    options = parser.parse_args()
    seconds = time_interleaved(
        {
            name: lambda arguments=arguments, code=code: start(arguments, code)
            for name, (arguments, code) in COMMANDS.items()
        },
        repeats=options.repeats,
    )
    base = seconds["python -c pass"]
    rows = [
        {"command": name, "seconds": value, "ratio": value / base}
        for name, value in seconds.items()
    ]
    info = machine()
    print(f"command line start, {info['cpu']}, python {info['python']}")
    print("| command | time | ratio to python -c pass |")
    print("|---|---|---|")
    for name, value in seconds.items():
        print(f"| {name} | {value * 1000:.0f} ms | {value / base:.2f}x |")
    ratio = seconds["reciprocam --help"] / base
    print(f"wrote {write_results('cli_startup', {'goal': GOAL, 'rows': rows})}")
    if ratio >= GOAL:
        print(f"reciprocam --help takes {ratio:.2f}x python -c pass; the goal is under {GOAL}x")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
