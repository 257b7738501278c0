"""The verdict rules: one module per group of notebooks, each built on criteria.check and Verdict.from_parts."""
