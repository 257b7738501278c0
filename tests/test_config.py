"""Where outputs go (config.output_root, plots.figures_dir): the variable, the checkout, else the working
directory, and never inside the package's install folder."""
import pytest

from rome_collapse import config, plots


def fake_checkout(root):
    """A folder laid out like the repository: pyproject.toml, notebooks/, lib/rome_collapse/."""
    (root / "notebooks").mkdir(parents=True)
    (root / "pyproject.toml").write_text("[project]\n")
    package = root / "lib" / "rome_collapse"
    package.mkdir(parents=True)
    return package


def fake_site_packages(root):
    package = root / "venv" / "lib" / "python3.12" / "site-packages" / "rome_collapse"
    package.mkdir(parents=True)
    return package


def test_this_package_runs_from_its_checkout():
    root = config.checkout_root()
    assert root is not None and config.package_dir() == root / "lib" / "rome_collapse"
    assert config.repo_root() == root


def test_a_checkout_needs_both_pyproject_and_notebooks(tmp_path):
    package = fake_checkout(tmp_path / "repo")
    assert config.checkout_root(package) == tmp_path / "repo"
    (tmp_path / "repo" / "notebooks").rmdir()
    assert config.checkout_root(package) is None
    assert config.checkout_root(fake_site_packages(tmp_path)) is None


def test_outputs_go_to_the_variable_first(monkeypatch, tmp_path):
    monkeypatch.setenv(config.OUTPUT_ENV, str(tmp_path / "out"))
    assert config.output_root(fake_checkout(tmp_path / "repo")) == tmp_path / "out"
    assert config.output_root(fake_site_packages(tmp_path)) == tmp_path / "out"
    assert plots.figures_dir("smoke") == tmp_path / "out" / "build" / "figures" / "smoke"
    assert plots.figures_dir("full") == tmp_path / "out" / "figures"
    assert (tmp_path / "out" / "figures").is_dir()


def test_without_the_variable_outputs_go_to_the_checkout_else_the_working_directory(monkeypatch, tmp_path):
    monkeypatch.delenv(config.OUTPUT_ENV, raising=False)
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    assert config.output_root(fake_checkout(tmp_path / "repo")) == tmp_path / "repo"
    assert config.output_root(fake_site_packages(tmp_path)) == tmp_path / "work"
    assert config.output_root() == config.checkout_root()  # this package, run from its checkout


def test_figures_dir_takes_its_folder_as_a_parameter(monkeypatch, tmp_path):
    monkeypatch.setenv(config.OUTPUT_ENV, str(tmp_path / "elsewhere"))
    assert plots.figures_dir("smoke", root=tmp_path) == tmp_path / "build" / "figures" / "smoke"
    assert not (tmp_path / "elsewhere").exists()


def test_nothing_is_written_inside_the_install_folder(monkeypatch, tmp_path):
    package = fake_site_packages(tmp_path)
    monkeypatch.delenv(config.OUTPUT_ENV, raising=False)
    monkeypatch.chdir(package.parent)  # run from site-packages itself
    with pytest.raises(ValueError, match="inside the package's install folder"):
        config.output_root(package)
    monkeypatch.setenv(config.OUTPUT_ENV, str(package / "figures"))
    with pytest.raises(ValueError, match=config.OUTPUT_ENV):
        config.output_root(package)
    monkeypatch.setattr(plots, "output_root", lambda: config.output_root(package))
    with pytest.raises(ValueError):
        plots.figures_dir("smoke")
    assert not (package / "figures").exists()
