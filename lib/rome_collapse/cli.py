"""``python -m rome_collapse edit|risk|scan|prepare …``: one edit (or its pre-flight check) from the command
line, the pre-flight check of every case of a CounterFact-format file (``scan``), or the caches a profile's runs
share, filled once before they start (``prepare``).

The result is one JSON object on the last line of standard output; bad arguments exit with 2.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time

from .collapse import RISK_THRESHOLD
from .models import DEFAULT_MODEL
from .stats import DEFAULT_SETTING, SETTINGS


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m rome_collapse",
                                     description="ROME / C-ROME edits and their collapse diagnostics.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("edit", "compute and apply one edit, report its effect"),
                            ("risk", "pre-flight: ROME's denominator ratio from keys alone")):
        p = sub.add_parser(name, help=help_text)
        _model_arguments(p)
        p.add_argument("--prompt", default=None, help="prompt with {} where the subject goes")
        p.add_argument("--subject", default=None)
        p.add_argument("--target-new", default=None)
        p.add_argument("--target-true", default=None)
        p.add_argument("--cases", default=None, metavar="FILE",
                       help="take the request from a CounterFact file instead (ROME's format or EasyEdit's flat one)")
        p.add_argument("--case-id", default=None, help="with --cases: the record's case_id")
        p.add_argument("--json", action="store_true", help="only the JSON line on standard output")
        if name == "edit":
            p.add_argument("--variant", choices=("rome", "c-rome"), default=None,
                           help="default: --hparams' if_c_rome, else rome")
            p.add_argument("--test-prefix", action=argparse.BooleanOptionalAction, default=None,
                           help="also report rewrite_acc_prefix: the rewrite accuracy with each editing prefix in front "
                                "of the rewrite prompt (the authors' placement), mean over the prefixes "
                                "(default: --hparams' if_prefix, else off)")
            p.add_argument("--ppl-texts", default="50",
                           help="ME-PPL set (50, 1k, 10k) or a JSON file with a list of strings")
            p.add_argument("--clamp-factor", type=float, default=None, metavar="F",
                           help="bound ‖δ‖ of v* by F × ‖W kᵘ + b‖ (default: --hparams' or the model's, "
                                "4 as in ROME). Not the "
                                "paper's: 10 lifted C-ROME's efficacy with --test-prefix on subject-first cases "
                                "in the original setting without losing locality (notebook 10)")
    _scan_parser(sub)
    p = sub.add_parser("prepare", help="fill the caches every run of a profile shares (models, templates, C)",
                       description="Converts each model once, generates its context templates and computes C in "
                                   "the original setting over the profile's statistics sample, so that runs started "
                                   "side by side afterwards (make test's parallel workers, make reproduce's "
                                   "lanes) find them cached instead of computing them each.")
    p.add_argument("--models", default="smollm2-135m,gemma3-270m", help="comma-separated model names")
    p.add_argument("--profile", choices=("smoke", "full", "large"), default="smoke")
    p.add_argument("--settings", default=",".join(SETTINGS),
                   help="comma-separated settings to set up (default: all; paper alone computes no C)")
    p.add_argument("--workers", type=int, default=1, help="threads computing C, each with a copy of the model")
    p.add_argument("--device", default=None)
    return parser


def _prepare(args) -> int:
    from . import workbook

    settings = [s for s in args.settings.split(",") if s]
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown or not settings:
        print(f"python -m rome_collapse prepare: error: --settings: {', '.join(unknown) or 'none given'}; "
              f"use {', '.join(SETTINGS)}", file=sys.stderr)
        return 2
    for name in [m for m in args.models.split(",") if m]:
        start = time.perf_counter()
        try:
            wb = workbook.setup(name, args.profile, settings, device=args.device, workers=args.workers)
        except Exception as exc:  # noqa: BLE001 - reported with the model's name, exit 2
            print(f"python -m rome_collapse prepare: error: {name}: {exc}", file=sys.stderr)
            return 2
        print(json.dumps({"model": name, "profile": args.profile, "seconds": round(time.perf_counter() - start, 1),
                          "setup": wb.describe()}))
    return 0


def _model_arguments(p) -> None:
    """What every command needs to set up an edit: the model, its layer and setting, templates, C's sample."""
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--hparams", default=None, metavar="FILE",
                   help="an EasyEdit ROME hyper-parameter YAML (the authors' hparams/ROME/*.yaml): its layers, v* "
                        "settings, mom2_adjustment (the setting), if_c_rome (the variant) and if_prefix replace the "
                        "model's defaults; the flags here win over it")
    p.add_argument("--layer", type=int, default=None, help="default: --hparams' layers, else the model's")
    p.add_argument("--setting", choices=SETTINGS, default=None,
                   help=f"paper: no C⁻¹, as the paper's runs; original: C⁻¹ as Meng et al.'s ROME "
                        f"(default: --hparams' mom2_adjustment, else {DEFAULT_SETTING})")
    p.add_argument("--templates", default=None, metavar="FILE",
                   help="context templates: a JSON list of strings whose first entry is {} "
                        "(default: the model's generated templates)")
    p.add_argument("--device", default=None)
    p.add_argument("--bos", choices=("auto", "on", "off"), default="auto")
    p.add_argument("--profile", choices=("smoke", "full", "large"), default="full",
                   help="size of the statistics sample for --setting original (see rome_collapse.profiles)")


class _BadInput(ValueError):
    """An argument that names something unusable (a file, a model, a layer); the message says which."""


def resolve_defaults(args, file) -> None:
    """Fill the flags left unset (None) in ``args``: from the EasyEdit file ``file`` (``easyedit_hparams.read``'s
    result, or None) where it says, else the built-in defaults. An explicit flag always wins. ``--layer`` and
    ``--clamp-factor`` stay None: the file's values reach them through the bundle's hyper-parameters."""
    said = file or argparse.Namespace(setting=None, variant=None, test_prefix=None)
    args.setting = args.setting or said.setting or DEFAULT_SETTING
    if hasattr(args, "variant"):  # edit only
        args.variant = args.variant or said.variant or "rome"
        args.test_prefix = bool(said.test_prefix) if args.test_prefix is None else args.test_prefix


def _load(args):
    """(bundle, what the update divides by, context templates) from the arguments of _model_arguments, after
    ``resolve_defaults`` has filled the flags left unset from ``--hparams``."""
    from . import easyedit_hparams, keys, models, stats
    from .profiles import get_profile

    try:
        file = easyedit_hparams.read(args.hparams) if args.hparams else None
    except (OSError, ValueError) as exc:  # HParamsFileError is a ValueError
        raise _BadInput(f"--hparams: {exc}") from exc
    resolve_defaults(args, file)
    templates = None
    if args.templates:
        try:
            templates = keys.load_templates(args.templates)
        except (OSError, ValueError) as exc:  # json.JSONDecodeError is a ValueError
            raise _BadInput(f"--templates: {exc}") from exc
    add_bos = {"auto": None, "on": True, "off": False}[args.bos]
    try:
        bundle = models.load_model(args.model, device=args.device, add_bos=add_bos, hparams=file)
    except models.ModelNotAvailable as exc:
        raise _BadInput(str(exc)) from exc
    except easyedit_hparams.HParamsFileError as exc:  # its layer is outside the model's
        raise _BadInput(f"--hparams: {exc}") from exc
    if args.layer is not None:
        try:
            bundle = bundle.with_hparams(layer=bundle.edit_layer(args.layer))
        except ValueError as exc:  # outside the model's layers
            raise _BadInput(f"--layer: {exc}") from exc
    profile = get_profile(args.profile)
    covariance = stats.covariance(bundle, args.setting, n_samples=profile.stats_samples, progress=not args.json)
    return bundle, covariance, templates or keys.context_templates(bundle, seed=profile.template_seed)


def _scan_parser(sub) -> None:
    p = sub.add_parser("scan", help="pre-flight ratio of every case of a CounterFact file (no v*)",
                       description="ROME's denominator ratio (kᵘ·C⁻¹k̄)/(k̄·C⁻¹k̄) of every case, from "
                                   "keys computed in batches; a CSV per case (ratio, the subject's position, "
                                   "token count and stratum, at risk or not) and a summary with the counts per "
                                   "stratum.")
    _model_arguments(p)
    p.add_argument("--cases", default=None, metavar="FILE",
                   help="JSON list of CounterFact records, ROME's format or EasyEdit's flat one (default: the "
                        "curated cases shipped here)")
    p.add_argument("--threshold", type=float, default=RISK_THRESHOLD,
                   help=f"at risk when the ratio is below this (default {RISK_THRESHOLD})")
    p.add_argument("--out", default=None, metavar="CSV", help="write one row per case to this CSV file")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads while scanning (default 0: torch's own; 1 helps when other jobs share the cores)")
    p.add_argument("--json", action="store_true",
                   help="print only the summary, as one JSON line, and no progress bar")


def _scan(args) -> int:
    """The ``scan`` command. Bad input (file, record, option) exits 2 with one line naming it, no traceback."""
    from pathlib import Path

    def fail(message: str) -> int:
        print(f"python -m rome_collapse scan: error: {message}", file=sys.stderr)
        return 2

    from . import scan
    from .data import CaseError, curated_cases, load_cases

    try:
        cases = load_cases(args.cases) if args.cases else curated_cases()
    except CaseError as exc:
        return fail(f"{args.cases}: {exc}")
    except (OSError, ValueError) as exc:  # missing file, not JSON (json.JSONDecodeError is a ValueError)
        return fail(f"--cases {args.cases}: {exc}")
    if not cases:
        return fail(f"--cases {args.cases}: no records")
    if args.out and not Path(args.out).resolve().parent.is_dir():
        return fail(f"--out {args.out}: folder does not exist")
    if args.threads < 0:
        return fail("--threads must be 0 or more")
    if args.json:  # no progress bars at all, the model loader's included
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    try:
        bundle, second_moment, templates = _load(args)
    except _BadInput as exc:
        return fail(str(exc))
    try:
        rows, summary = scan.scan_cases(bundle, cases, templates, second_moment, threshold=args.threshold,
                                        threads=args.threads or None, progress=not args.json)
    except CaseError as exc:
        return fail(f"{args.cases or 'curated cases'}: {exc}")
    out = {**summary.to_dict(), "cases_file": args.cases, "csv": args.out}
    if args.out:
        import pandas as pd

        pd.DataFrame([r.to_dict() for r in rows]).to_csv(args.out, index=False)
    if not args.json:
        print("\n".join(summary.lines()))
        at_risk = [r for r in rows if r.at_risk]
        for r in at_risk[:10]:
            print(f"  at risk: case {r.case_id} ({r.subject!r} at token {r.subject_position}): ratio {r.ratio:.4f}")
        if len(at_risk) > 10:
            print(f"  … and {len(at_risk) - 10} more" + (f" (all in {args.out})" if args.out else ""))
        if args.out:
            print(f"one row per case in {args.out}")
    print(json.dumps(out))
    return 0


def _ppl_texts(spec: str) -> list[str]:
    from .data import MEPPL_FILES, meppl

    if spec in MEPPL_FILES:
        return meppl(spec)
    with open(spec, encoding="utf-8") as f:
        texts = json.load(f)
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise ValueError(f"{spec}: expected a JSON list of strings")
    return texts


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)  # exits 2 with a one-line usage error on bad arguments
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if args.command == "scan":
        return _scan(args)
    if args.command == "prepare":
        return _prepare(args)
    from . import outcomes, rome
    from .data import CaseError

    try:
        case = _request(args)
    except CaseError as exc:
        parser.error(str(exc))
    except (OSError, ValueError) as exc:  # missing file, not JSON (json.JSONDecodeError is a ValueError)
        parser.error(f"--cases {args.cases}: {exc}")
    if getattr(args, "clamp_factor", None) is not None and not args.clamp_factor > 0:
        parser.error("--clamp-factor must be above 0")
    try:
        bundle, second_moment, templates = _load(args)
    except _BadInput as exc:
        parser.error(str(exc))

    if args.command == "risk":
        out = {**rome.collapse_risk(bundle, case, templates, second_moment).to_dict(), "model": args.model}
        print(json.dumps(out))
        return 0

    if args.clamp_factor is not None:
        bundle = bundle.with_hparams(clamp_norm_factor=args.clamp_factor)
    start = time.perf_counter()
    edit = rome.edit(bundle, case, templates, second_moment, variant=args.variant)
    edit_seconds = time.perf_counter() - start
    scored = args.target_true is not None or args.cases is not None  # a bare --prompt edit: rewrite accuracy only
    outcome = outcomes.measure_edit(bundle, edit, _ppl_texts(args.ppl_texts),
                                    test_prefixes=templates[1:] if args.test_prefix else None)
    measured = outcome.to_dict()
    if not scored:
        for name in ("rephrase_acc", "locality_acc", "cf_efficacy", "cf_generalization", "cf_locality"):
            measured[name] = None
    out = {**edit.report.to_dict(), "model": args.model, "case_id": case.case_id,
           **{k: measured[k] for k in ("ppl_before", "ppl_after", "rewrite_acc", "rephrase_acc",
                                       "locality_acc", "rewrite_acc_prefix", "cf_efficacy", "cf_generalization",
                                       "cf_locality")},
           "ppl_ratio": outcome.ppl_ratio, "collapsed": outcome.collapsed,
           "test_prefixes": len(templates) - 1 if args.test_prefix else 0, "v_star_steps": edit.value.steps,
           "edit_seconds": edit_seconds, "clamp_norm_factor": bundle.hparams.clamp_norm_factor,
           "hparams_file": args.hparams}
    print(json.dumps(out))
    return 0


def _request(args):
    """The edit request: a record of ``--cases`` picked by ``--case-id``, or one made of ``--prompt``, ``--subject``,
    ``--target-new`` and ``--target-true``. Raises CaseError naming what is wrong."""
    from .data import CaseError, load_cases, parse_case

    if args.cases is not None:
        if args.case_id is None:
            raise CaseError("--cases needs --case-id (the record to edit)")
        given = [n for n in ("prompt", "subject", "target_new", "target_true") if getattr(args, n) is not None]
        if given:
            raise CaseError(f"--cases takes the request from the file; drop --{given[0].replace('_', '-')}")
        found = [c for c in load_cases(args.cases) if str(c.case_id) == str(args.case_id)]
        if not found:
            raise CaseError(f"{args.cases}: no record with case_id {args.case_id}")
        return found[0]
    missing = [n for n in ("prompt", "subject") + (("target_new",) if args.command == "edit" else ())
               if getattr(args, n) is None]
    if missing:
        raise CaseError(f"--{missing[0].replace('_', '-')} is required (or --cases FILE --case-id N)")
    record = {"case_id": "cli", "requested_rewrite": {
        "prompt": args.prompt, "subject": args.subject,
        "target_new": {"str": args.target_new or "x"}, "target_true": {"str": args.target_true or "?"}}}
    return parse_case(record)


if __name__ == "__main__":
    sys.exit(main())
