"""The package on its own: the public names at the top, a light ``import rome_collapse``, and an installed copy
(not editable) that runs from another folder and writes nothing beside itself."""
import importlib
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import rome_collapse
from rome_collapse import config

MODULES = {"load_model": "models", "EditCase": "data", "load_cases": "data", "edit": "rome",
           "compute_edits": "rome", "collapse_risk": "rome", "applied": "rome", "EditSession": "rome",
           "measure_edit": "outcomes", "measure_edits": "outcomes", "scan_cases": "scan", "covariance": "stats",
           "context_templates": "keys", "perplexity": "metrics", "collapsed": "collapse",
           "RISK_THRESHOLD": "collapse", "COLLAPSE_FACTOR": "collapse"}


def test_the_public_names_are_their_modules_objects():
    assert sorted(rome_collapse.__all__) == sorted(MODULES)
    for name, module in MODULES.items():
        assert getattr(rome_collapse, name) is getattr(importlib.import_module(f"rome_collapse.{module}"), name)
    assert set(MODULES) <= set(dir(rome_collapse))
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        rome_collapse.nothing_here


def test_importing_the_package_loads_no_torch_until_a_name_is_used():
    code = ("import sys, rome_collapse as rc; print('torch' in sys.modules); rc.RISK_THRESHOLD; "
            "print('torch' in sys.modules); rc.edit; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.split() == ["False", "False", "True"], out.stderr[-2000:]


INSTALLED_CHECK = """
import os, sys
from pathlib import Path
import rome_collapse as rc
from rome_collapse import plots
target = Path(sys.argv[1]).resolve()
print(Path(rc.__file__).resolve().is_relative_to(target))
print(plots.figures_dir("smoke").resolve().is_relative_to(target))
print(plots.figures_dir("smoke").resolve() == Path.cwd().resolve() / "build" / "figures" / "smoke")
print(len(rc.load_cases([{"prompt": "Paris is in", "subject": "Paris", "target_new": "Italy",
                             "ground_truth": "France"}])))
from rome_collapse import data
print(len(data.curated_cases()) > 0)  # package data travelled with the wheel
os.chdir(target)
try:
    plots.figures_dir("smoke")
    print("wrote inside the install folder")
except ValueError:
    print("refused")
"""


def test_an_installed_copy_runs_from_elsewhere_and_writes_outside_itself(tmp_path):
    if importlib.util.find_spec("pip") is None or importlib.util.find_spec("setuptools") is None:
        pytest.skip("needs pip and setuptools in this interpreter")
    source, target, work = tmp_path / "source", tmp_path / "site", tmp_path / "work"
    repo = config.repo_root()
    # A copy of what the wheel is built from, so that the build's own folders (build/, *.egg-info) stay out of
    # the checkout.
    shutil.copytree(repo / "lib", source / "lib", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(repo / name, source / name)
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
                              "--no-cache-dir", "--quiet", "--target", str(target), str(source)],
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-3000:]
    assert (target / "rome_collapse" / "resources" / "hparams.yaml").is_file()
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", config.OUTPUT_ENV)}
    env["PYTHONPATH"] = str(target)
    before = {p for p in target.rglob("*") if "__pycache__" not in p.parts}
    out = subprocess.run([sys.executable, "-c", INSTALLED_CHECK, str(target)], cwd=work, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split("\n")[:6] == ["True", "False", "True", "1", "True", "refused"], out.stdout
    assert {p for p in target.rglob("*") if "__pycache__" not in p.parts} == before
