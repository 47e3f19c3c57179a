"""How long `hwkit --help` and `hwkit doctor` take, beside a bare Python start.

Targets (ARCHITECTURE.md §5): `hwkit --help` under 0.5 s, `hwkit doctor` under 3 s.
Prints the median of N runs of each and the ratio to the bare interpreter start, and
whether torch/transformers/openvino were imported (they must not be).

hwkit's own sources are byte-compiled first, as pip does when it installs a package: an
editable install under ``PYTHONDONTWRITEBYTECODE=1`` (this machine sets it) would otherwise
recompile every hwkit module on every start, which no installed copy does.

    python bench/cli_startup.py [--runs 7]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

HEAVY = ("torch", "transformers", "openvino", "trl", "peft", "bm25s")
PROBE = (
    "import sys, runpy; sys.argv = ['hwkit'] + sys.argv[1:];\n"
    "try:\n    runpy.run_module('hwkit', run_name='__main__')\n"
    "except SystemExit:\n    pass\n"
    f"print('HEAVY=' + ','.join(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)"
)


def timed(cmd: list[str], runs: int) -> tuple[float, str]:
    samples, stderr = [], ""
    for _ in range(runs):
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        samples.append(time.perf_counter() - start)
        stderr = proc.stderr
    return statistics.median(samples), stderr


def byte_compile() -> None:
    """Write __pycache__ for hwkit's folders (what `pip install` does for a package)."""
    import compileall
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    for folder in ("core", "backends", "plugins", "profiles"):
        compileall.compile_dir(repo / folder, quiet=1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    runs = parser.parse_args().runs
    byte_compile()
    base, _ = timed([sys.executable, "-c", "pass"], runs)
    rows = [("python -c pass", base, "", None)]
    for label, args, target in (
        ("hwkit --help", ["--help"], 0.5),
        ("hwkit doctor", ["doctor"], 3.0),
    ):
        seconds, err = timed([sys.executable, "-c", PROBE, *args], runs)
        heavy = next((line[6:] for line in err.splitlines() if line.startswith("HEAVY=")), "?")
        rows.append((label, seconds, heavy or "none", target))
    print(f"{'command':<16} {'median s':>9} {'x bare python':>14} {'target s':>9}  heavy imports")
    for label, seconds, heavy, target in rows:
        tgt = f"{target:.1f}" if target else "-"
        ok = "" if target is None else ("  OK" if seconds < target else "  OVER")
        print(f"{label:<16} {seconds:>9.3f} {seconds / base:>14.1f} {tgt:>9}  {heavy}{ok}")


if __name__ == "__main__":
    main()
