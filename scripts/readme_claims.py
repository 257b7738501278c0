"""Copy the claims table (figures/00_claims.md, written by notebooks/00_overview.ipynb) into README.md, between the
two markers that hold it, so that README never states a verdict the committed run did not reach.

    python scripts/readme_claims.py          # rewrite README's table from figures/00_claims.md
    python scripts/readme_claims.py --check  # exit 1, naming the first differing row, when they differ

`make reproduce` runs it after the overview; tests/test_readme.py checks that the two match."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEGIN = "<!-- claims table: copied from figures/00_claims.md by scripts/readme_claims.py; edit neither by hand -->"
END = "<!-- end of the claims table -->"


def split(readme: str) -> tuple[str, str, str]:
    """README as (before the table, the table, after it); a README without both markers is refused."""
    if readme.count(BEGIN) != 1 or readme.count(END) != 1 or readme.index(BEGIN) > readme.index(END):
        raise ValueError(f"README.md must hold the markers {BEGIN!r} and {END!r} once each, in that order")
    head, rest = readme.split(BEGIN)
    table, tail = rest.split(END)
    return head, table.strip("\n"), tail


def with_table(readme: str, table: str) -> str:
    head, _, tail = split(readme)
    return f"{head}{BEGIN}\n\n{table.strip(chr(10))}\n\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when they differ")
    args = parser.parse_args(argv)
    readme_path, claims_path = ROOT / "README.md", ROOT / "figures" / "00_claims.md"
    readme, table = readme_path.read_text(encoding="utf-8"), claims_path.read_text(encoding="utf-8")
    if args.check:
        got, want = split(readme)[1].splitlines(), table.strip("\n").splitlines()
        for i, (a, b) in enumerate(zip(got, want)):
            if a != b:
                print(f"README's claims table differs from {claims_path.name} at row {i + 1}:\n  README: {a}\n"
                      f"  table:  {b}", file=sys.stderr)
                return 1
        if len(got) != len(want):
            print(f"README's claims table has {len(got)} rows, {claims_path.name} {len(want)}", file=sys.stderr)
            return 1
        return 0
    readme_path.write_text(with_table(readme, table), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
