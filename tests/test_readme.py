"""README's claims table is the committed figures/00_claims.md, row for row (scripts/readme_claims.py copies it)."""
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("readme_claims", ROOT / "scripts" / "readme_claims.py")
readme_claims = importlib.util.module_from_spec(spec)
spec.loader.exec_module(readme_claims)


def test_readme_claims_table_is_the_committed_claims_table():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = (ROOT / "figures" / "00_claims.md").read_text(encoding="utf-8")
    assert readme_claims.split(readme)[1].splitlines() == table.strip("\n").splitlines()
    assert readme_claims.main(["--check"]) == 0


def test_a_readme_row_that_says_otherwise_is_caught_and_rewritten():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = (ROOT / "figures" / "00_claims.md").read_text(encoding="utf-8")
    stale = readme_claims.with_table(readme, table.replace("| original |", "| rome |", 1))
    assert readme_claims.split(stale)[1] != table.strip("\n")
    assert readme_claims.split(readme_claims.with_table(stale, table))[1] == table.strip("\n")
    assert readme_claims.with_table(readme, table) == readme  # copying again changes nothing
    with pytest.raises(ValueError, match="markers"):
        readme_claims.split(readme.replace(readme_claims.END, ""))
