"""scripts/reproduce.py: runs notebooks in order, names the failing cell, merges timings."""
import importlib.util
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from nbformat.v4 import new_code_cell, new_notebook

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "reproduce.py"


def notebook(path: Path, *sources: str) -> Path:
    cells = [new_code_cell('model = "x"\nprofile = "smoke"', metadata={"tags": ["parameters"]})]
    cells += [new_code_cell(s) for s in sources]
    nb = new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                            "language": "python"}})
    nbformat.write(nb, path)
    return path


def run(tmp_path, *notebooks, options=()):
    return subprocess.run([sys.executable, str(SCRIPT), "--model", "tiny", "--profile", "smoke", "--out",
                           str(tmp_path / "out"), *options, *map(str, notebooks)],
                          capture_output=True, text=True, timeout=300)


def load_script():
    spec = importlib.util.spec_from_file_location("reproduce", SCRIPT)
    reproduce = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reproduce)
    return reproduce


def test_a_failing_notebook_stops_the_run_and_names_the_cell(tmp_path):
    good = notebook(tmp_path / "01_good.ipynb", "assert model == 'tiny' and profile == 'smoke'")
    bad = notebook(tmp_path / "02_bad.ipynb", "x = 1", "1 / 0")
    never = notebook(tmp_path / "03_never.ipynb", "pass")
    result = run(tmp_path, good, bad, never)
    assert result.returncode == 1
    assert "01_good.ipynb:" in result.stdout  # the first one ran, with its time
    assert "FAILED" in result.stderr and "02_bad.ipynb" in result.stderr
    # cells run: parameters (1), papermill's injected parameters (2), x = 1 (3), 1 / 0 (4)
    assert "cell 4 (`1 / 0`) raised ZeroDivisionError" in result.stderr
    assert not (tmp_path / "out" / "03_never-tiny-smoke.ipynb").exists()


def test_extra_parameters_reach_the_notebook_as_yaml_values(tmp_path):
    checked = notebook(tmp_path / "01_workers.ipynb", "assert workers == 2 and isinstance(workers, int)")
    assert run(tmp_path, checked, options=("-p", "workers", "2")).returncode == 0
    assert run(tmp_path, checked, options=("-p", "workers", "3")).returncode == 1


def test_timings_merge_replaces_rows_of_the_same_notebook_and_model(tmp_path):
    reproduce = load_script()
    path = tmp_path / "timings.csv"
    reproduce.record_timings([{"notebook": "a", "model": "m", "profile": "full", "seconds": 1.0},
                              {"notebook": "b", "model": "m", "profile": "full", "seconds": 2.0}], path)
    reproduce.record_timings([{"notebook": "a", "model": "m", "profile": "full", "seconds": 5.0},
                              {"notebook": "a", "model": "g", "profile": "full", "seconds": 7.0}], path)
    table = pd.read_csv(path).set_index(["notebook", "model"])["seconds"].to_dict()
    assert table == {("b", "m"): 2.0, ("a", "m"): 5.0, ("a", "g"): 7.0}


def test_runs_side_by_side_lose_no_timing_row(tmp_path):
    """make reproduce's lanes finish notebooks at the same moments: each merge is locked."""
    reproduce = load_script()
    path = tmp_path / "timings.csv"

    def record(lane):
        for i in range(15):
            reproduce.record_timings([{"notebook": f"{lane}-{i}", "model": "m", "profile": "full", "seconds": 1.0,
                                       "workers": 1}], path)

    with ThreadPoolExecutor(3) as pool:
        list(pool.map(record, "abc"))
    assert len(pd.read_csv(path)) == 45


def test_notebooks_beyond_the_paper_state_their_time_budget_and_the_committed_runs_kept_it():
    """Each budgeted notebook says its budget in its opening cell, and the committed full run (the default model,
    figures/reproduce_timings.csv) took no longer."""
    from rome_collapse.models import DEFAULT_MODEL
    from rome_collapse.profiles import TIME_BUDGETS_MIN

    repo = SCRIPT.parents[1]
    timings = pd.read_csv(repo / "figures" / "reproduce_timings.csv")
    full = timings[(timings["profile"] == "full") & (timings["model"] == DEFAULT_MODEL)].set_index("notebook")
    assert TIME_BUDGETS_MIN
    for name, minutes in TIME_BUDGETS_MIN.items():
        opening = "".join(nbformat.read(repo / "notebooks" / f"{name}.ipynb", as_version=4).cells[0].source)
        assert f"**Time budget: {minutes} min**" in opening, name
        seconds = full.loc[f"{name}.ipynb", "seconds"]
        assert seconds <= 60 * minutes, f"{name}: the committed run took {seconds:.0f} s, over its {minutes} min"


def dry_run(tmp_path, target: str) -> list[str]:
    """The commands `make -n` would run for a target, runs and prepares only, in order."""
    out = subprocess.run(["make", "-n", "--no-print-directory", target, f"RUNS={tmp_path / 'runs'}",
                          "STAMP=pyproject.toml"],  # the setup stamp stands for itself: no install in a dry run
                         cwd=SCRIPT.parents[1], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [line for line in out.stdout.splitlines() if "reproduce.py" in line or "rome_collapse prepare" in line]


def find(lines, *words) -> int:
    found = [i for i, line in enumerate(lines) if all(w in line for w in words)]
    assert len(found) == 1, (words, lines)
    return found[0]


PAPER = ("00_overview", "01_denominators", "02_key_tsne", "03_first_token", "04_position_swaps", "05_concentration",
         "06_the_fix", "11_counterfact", "12_table3")


def test_make_reproduce_paper_runs_each_paper_notebook_once_and_the_overview_last(tmp_path):
    lines = dry_run(tmp_path, "reproduce-paper")
    runs = {name: find(lines, "--model smollm2-135m", f"notebooks/{name}.ipynb") for name in PAPER}
    assert find(lines, "--model gemma3-270m", "03_first_token.ipynb") < runs["03_first_token"]
    assert runs["00_overview"] == len(lines) - 1
    for name in ("01_denominators", "11_counterfact"):
        assert "-p workers" in lines[runs[name]] and "--commit" in lines[runs[name]]
    assert not any("08_predict" in line for line in lines)  # the paper's notebooks only


@pytest.mark.parametrize("run, needs", [
    ("04_position_swaps", ["prepare --models smollm2-135m", "notebooks/01_denominators.ipynb"]),
    ("06_the_fix", ["prepare --models smollm2-135m", "notebooks/01_denominators.ipynb"]),
    ("03_first_token", ["prepare --models smollm2-135m", "prepare --models gemma3-270m", "--model gemma3-270m"]),
    ("05_concentration", ["prepare --models smollm2-135m", "prepare --models gemma3-270m"]),
    ("02_key_tsne", ["prepare --models smollm2-135m"]),
    ("11_counterfact", ["prepare --models smollm2-135m"]),
    ("12_table3", ["prepare --models smollm2-135m", "prepare --models gemma3-270m", "--model gemma3-270m"]),
])
def test_each_run_of_make_reproduce_comes_after_the_runs_it_reads(tmp_path, run, needs):
    """Asked for alone, a run brings along exactly what it reads (the graph's edges), before itself."""
    lines = dry_run(tmp_path, str(tmp_path / "runs" / run))
    assert len(lines) == len(needs) + 1 and run in lines[-1]
    for words in needs:
        find(lines[:-1], words)
