"""Same-run A/B of ``ws.ingest`` between two installs of idstitch (two virtualenvs).

Writes the workload once, then ingests it with each interpreter in turn (alternating, each run
into a fresh store, one process: ``parallel=False``), and prints the median seconds of each and
their ratio. On a shared machine only such alternating, same-run ratios mean anything. With
``--c`` a third install joins the rotation (say: the baseline, the code before a change, the
code after it), and each is reported against ``--a``.

    python benchmarks/ab_ingest.py --a /path/old/.venv/bin/python --b .venv/bin/python \\
        --n 20000 --mix identity --rounds 3 [--postgres] [--c /path/third/.venv/bin/python]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
from pathlib import Path

import workload

RUN = """
import sys, time, idstitch
url, path = sys.argv[1], sys.argv[2]
with idstitch.open(url) as ws:
    start, cpu = time.perf_counter(), time.process_time()
    with open(path, "rb") as lines:
        ws.ingest(lines, parallel=False)
    print(time.perf_counter() - start, time.process_time() - cpu)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--a", required=True, help="the first interpreter (the baseline)")
    parser.add_argument("--b", required=True, help="the second interpreter")
    parser.add_argument("--c", help="a third interpreter (optional)")
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--mix", default="attributes")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--postgres", action="store_true", help="on a throwaway PostgreSQL, not SQLite")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "messages.ndjson"
        with data.open("wb") as out:
            for line in workload.generate(args.n, 0, args.mix):
                out.write((line if isinstance(line, bytes) else line.encode()) + b"\n")
        pg = None
        if args.postgres:
            from idstitch.testing import TemporaryPostgres

            pg = TemporaryPostgres().__enter__()
        try:
            names = ["a", "b"] + (["c"] if args.c else [])
            times: dict[str, list[float]] = {name: [] for name in names}
            cpus: dict[str, list[float]] = {name: [] for name in names}
            for round_ in range(args.rounds):
                # Each install takes each place in the order in turn (round robin).
                shift = round_ % len(names)
                for name in names[shift:] + names[:shift]:
                    tag = f"{name}{round_}"
                    url = pg.create_database(tag) if pg else f"sqlite:///{tmp}/{tag}.db"
                    python = str(Path(getattr(args, name)).absolute())
                    done = subprocess.run([python, "-P", "-c", RUN, url, str(data)],
                                          check=True, capture_output=True, text=True, cwd=tmp)
                    wall, cpu = map(float, done.stdout.split())
                    times[name].append(wall)
                    cpus[name].append(cpu)
        finally:
            if pg is not None:
                pg.__exit__(None, None, None)
    # Wall time, and the process's CPU time (one process: parallel=False), which the other
    # loads of a shared machine shift less.
    a, a_cpu = statistics.median(times["a"]), statistics.median(cpus["a"])
    parts = [f"a {a:.3f} s (cpu {a_cpu:.3f} s)"]
    for name in names[1:]:
        m, m_cpu = statistics.median(times[name]), statistics.median(cpus[name])
        parts.append(f"{name} {m:.3f} s (cpu {m_cpu:.3f} s), {name}/a {m / a:.3f} "
                     f"(cpu {m_cpu / a_cpu:.3f})")
    print(f"{args.mix} {'postgresql' if args.postgres else 'sqlite'} n={args.n}: "
          + "; ".join(parts))


if __name__ == "__main__":
    main()
