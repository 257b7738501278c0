"""The committed notebooks: executed by the full run, clean, small; and the helpers that make them so."""
import json
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook, new_output

from rome_collapse import notebooks
from rome_collapse.config import repo_root

COMMITTED = sorted((repo_root() / "notebooks").glob("[0-9][0-9]_*.ipynb"))
# Notebooks that only make sense with a live kernel (widgets) carry no outputs.
INTERACTIVE = {"07_explorer.ipynb"}


def test_there_are_notebooks():
    assert len(COMMITTED) >= 7


@pytest.mark.parametrize("path", [p for p in COMMITTED if p.name not in INTERACTIVE], ids=lambda p: p.name)
def test_committed_notebook_carries_full_run_outputs(path):
    nb = json.loads(path.read_text())
    assert notebooks.outputs_profile(nb) == "full", f"{path.name}: outputs missing or not from the full profile"
    injected = [c for c in nb["cells"] if notebooks.INJECTED in c.get("metadata", {}).get("tags", [])]
    assert len(injected) == 1 and 'profile = "full"' in "".join(injected[0]["source"])
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            assert not (out.get("output_type") == "stream" and out.get("name") == "stderr"), path.name
            assert notebooks.WIDGET_VIEW not in out.get("data", {}), path.name
            text = json.dumps(out.get("text", "")) + json.dumps({k: v for k, v in out.get("data", {}).items()
                                                                  if k.startswith("text/")})
            for volatile in (str(repo_root()), "/root/", "/home/", "/tmp/"):
                assert volatile not in text, f"{path.name}: output names {volatile}"
        assert "papermill" not in cell.get("metadata", {})


def test_committed_notebooks_are_small():
    assert sum(p.stat().st_size for p in COMMITTED) < 8 * 1024 * 1024


def _executed(tmp_path: Path) -> dict:
    nb = new_notebook(cells=[
        new_code_cell('profile = "smoke"', metadata={"tags": ["parameters"]}),
        new_code_cell('profile = "full"', metadata={"tags": [notebooks.INJECTED], "papermill": {"duration": 1}}),
        new_code_cell("run()", outputs=[
            new_output("stream", name="stderr", text="100%|####| 3/3\n"),
            new_output("display_data", data={notebooks.WIDGET_VIEW: {"model_id": "x"}, "text/plain": "HBox()"}),
            new_output("stream", name="stdout", text=f"read {tmp_path}/figures/a.csv\n"),
            new_output("execute_result", data={"text/plain": "0.5"}, execution_count=3)])],
        metadata={"papermill": {"parameters": {"profile": "full"}, "input_path": str(tmp_path)},
                  "widgets": {"application/vnd.jupyter.widget-state+json": {"state": {"x": {}}}}})
    return json.loads(nbformat.writes(nb))


def test_clean_executed_keeps_results_and_drops_noise(tmp_path):
    clean = notebooks.clean_executed(_executed(tmp_path), "full", "smollm2-135m", tmp_path)
    outputs = clean["cells"][2]["outputs"]
    assert [o["output_type"] for o in outputs] == ["stream", "execute_result"]
    assert "".join(outputs[0]["text"]) == "read ./figures/a.csv\n"
    assert "papermill" not in clean["metadata"] and "papermill" not in clean["cells"][1]["metadata"]
    assert "widgets" not in clean["metadata"]  # the dropped progress bars' widget state
    assert clean["metadata"]["rome_collapse"]["profile"] == "full"
    assert notebooks.outputs_profile(clean) == "full"


def test_smoke_copy_has_the_notebooks_own_parameters_and_no_outputs(tmp_path):
    clean = notebooks.clean_executed(_executed(tmp_path), "full", "smollm2-135m", tmp_path)
    smoke = notebooks.smoke_copy(clean)
    assert ["".join(c["source"]) for c in smoke["cells"]] == ['profile = "smoke"', "run()"]
    assert all(not c.get("outputs") for c in smoke["cells"])
    assert notebooks.outputs_profile(smoke) is None
