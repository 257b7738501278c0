"""scripts/reproduce.py: runs notebooks in order, names the failing cell, merges timings."""
import importlib.util
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import pandas as pd
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
