#!/usr/bin/env python
"""Run notebooks headless with papermill, in order, and say how long each took.

    python scripts/reproduce.py --model smollm2-135m --profile full --out build/notebooks notebooks/0*.ipynb

Executed copies go to --out (git ignores build/); the full profile refreshes figures/ and records each
notebook's time in figures/reproduce_timings.csv (one row per notebook and model, replaced on each run).
With --commit (full profile only) each executed notebook is also written back over its source in
notebooks/, cleaned of progress bars and volatile metadata (rome_collapse.notebooks.clean_executed).
A failing notebook stops the run with the notebook and the failing cell named (exit 1). ``-p NAME VALUE``
passes one more parameter (a YAML value: ``-p workers 2``). Runs started side by side (make reproduce's lanes)
share the timings table under a file lock.

    python scripts/reproduce.py --smoke-copies build/nbval notebooks/*.ipynb

writes output-free copies with the notebooks' own (smoke) parameters for `make test`'s nbval run.
"""
import argparse
import fcntl
import os
import sys
import time
from pathlib import Path

import nbformat
import pandas as pd
import papermill
import yaml

from rome_collapse.notebooks import clean_executed, smoke_copy

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--profile", default="full", choices=("smoke", "full"))
    parser.add_argument("--out", type=Path, default=Path("build/notebooks"))
    parser.add_argument("--commit", action="store_true",
                        help="write each executed notebook back into its source file (full profile only)")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="one more notebook parameter (VALUE read as YAML), e.g. -p workers 2")
    parser.add_argument("--smoke-copies", type=Path, default=None, metavar="DIR",
                        help="only write output-free copies of the notebooks into DIR (for nbval) and exit")
    args = parser.parse_args()
    if args.smoke_copies:
        args.smoke_copies.mkdir(parents=True, exist_ok=True)
        for notebook in args.notebooks:
            nbformat.write(nbformat.from_dict(smoke_copy(nbformat.read(notebook, as_version=4))),
                           args.smoke_copies / notebook.name)
        return 0
    if args.commit and args.profile != "full":
        parser.error("--commit writes into notebooks/: only full-profile outputs are committed")
    args.out.mkdir(parents=True, exist_ok=True)
    extra = {name: yaml.safe_load(value) for name, value in args.parameter}
    timings = []
    for notebook in args.notebooks:
        target = args.out / f"{notebook.stem}-{args.model}-{args.profile}.ipynb"
        start = time.perf_counter()
        print(f"running {notebook} (model={args.model}, profile={args.profile}) ...", flush=True)
        try:
            papermill.execute_notebook(str(notebook), str(target), kernel_name="python3", progress_bar=False,
                                       parameters={"model": args.model, "profile": args.profile, **extra})
        except papermill.PapermillExecutionError as exc:
            # exec_count counts the parameters cell papermill injects; the source line says which cell it is
            first_line = next((line for line in (exc.source or "").splitlines() if line.strip()), "")
            print(f"FAILED {notebook}: cell {exc.exec_count} (`{first_line[:80]}`) raised {exc.ename}: {exc.evalue}\n"
                  f"  executed copy with the error: {target}", file=sys.stderr)
            return 1
        seconds = time.perf_counter() - start
        if args.commit:
            executed = nbformat.read(target, as_version=4)
            nbformat.write(nbformat.from_dict(clean_executed(executed, args.profile, args.model, REPO)), notebook)
        timings.append({"notebook": notebook.name, "model": args.model, "profile": args.profile,
                        "seconds": round(seconds, 1), "workers": int(extra.get("workers", 1))})
        if args.profile == "full":  # recorded as each notebook ends, so a later failure keeps the earlier times
            record_timings(timings[-1:], REPO / "figures" / "reproduce_timings.csv")
        print(f"  {notebook.name}: {seconds:.0f} s", flush=True)
    log = args.out / f"timings-{args.model}-{args.profile}.csv"
    pd.DataFrame(timings).to_csv(log, index=False)
    total = sum(t["seconds"] for t in timings)
    print(f"all {len(timings)} notebooks on {args.model} ({args.profile}): {total:.0f} s; timings in {log}")
    return 0


def record_timings(timings: list[dict], path: Path) -> None:
    """Merge this run's rows into the committed timings table, replacing older rows of the same notebook and model.
    Locked: another run may be writing it at the same moment."""
    # threads: what the kernel's torch was given (OMP_NUM_THREADS, as when runs share the CPU), else every core;
    # workers: the notebook's threads working side by side, each with that many torch threads
    threads = int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count())
    new = pd.DataFrame(timings).assign(finished=time.strftime("%Y-%m-%d %H:%M:%S"), cpus=os.cpu_count(),
                                       threads=threads)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists():
            old = pd.read_csv(path)
            keep = ~old.set_index(["notebook", "model"]).index.isin(new.set_index(["notebook", "model"]).index)
            new = pd.concat([old[keep], new], ignore_index=True)
        for column in ("threads", "workers"):  # rows from before the column was kept have none
            if column in new:
                new[column] = new[column].astype("Int64")
        new.to_csv(path, index=False)


if __name__ == "__main__":
    sys.exit(main())
