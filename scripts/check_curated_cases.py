#!/usr/bin/env python
"""Validate the curated edit cases and check that the default model knows every fact.

    python scripts/check_curated_cases.py [--path FILE] [--model smollm2-135m] [--write-filtered]

Each record is validated by the package's loader (errors name the case_id and the field), put in
one of three groups with the model's tokenizer, and scored: a fact is *known* when the model
prefers " " + target_true over " " + target_new on the rewrite prompt, by the per-token NLL that
CounterFact's efficacy uses. ``--write-filtered`` keeps only known facts and renumbers case_id.
Exit status 1 when a fact is unknown and the file was not rewritten.
"""
import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from rome_collapse import data, metrics, models, samples

DEFAULT_PATH = Path(data.__file__).parent / "resources" / "curated_cases.json"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--path", type=Path, default=DEFAULT_PATH)
    parser.add_argument("--model", default=models.DEFAULT_MODEL)
    parser.add_argument("--write-filtered", action="store_true")
    args = parser.parse_args()

    records = json.loads(args.path.read_text(encoding="utf-8"))
    cases = data.load_cases(records)  # raises CaseError naming the record and the field
    bundle = models.load_model(args.model)
    prompts = [c.text for c in cases]
    nll_true = metrics.target_nll(bundle, prompts, [c.target_true for c in cases])
    nll_new = metrics.target_nll(bundle, prompts, [c.target_new for c in cases])
    margins = (nll_new - nll_true).tolist()
    groups = [samples.case_group(bundle, c) for c in cases]
    known = [m > 0 for m in margins]

    print(f"{len(cases)} records, {len(cases) - sum(known)} unknown to {args.model}")
    for name, count in Counter(g for g, k in zip(groups, known) if k).most_common():
        print(f"  {name:18s} {count:4d} known")
    print("  relations:", dict(Counter(c.relation_id for c, k in zip(cases, known) if k).most_common()))
    for case, margin, ok in zip(cases, margins, known):
        if not ok:
            print(f"  unknown: case {case.case_id} {case.text!r} true={case.target_true!r} "
                  f"new={case.target_new!r} margin={margin:.2f}")
    if args.write_filtered:
        kept = [r for r, ok in zip(records, known) if ok]
        for i, record in enumerate(kept):
            record["case_id"] = i
        args.path.write_text(json.dumps(kept, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"wrote {len(kept)} records to {args.path}")
        return 0
    return 0 if all(known) else 1


if __name__ == "__main__":
    sys.exit(main())
