#!/usr/bin/env python
"""Benchmark: this engine against a plain ROME written the way the authors' code works, in one run.

    python benchmarks/bench_engine.py [--model smollm2-135m | --random-gpt2-xl] [--device cuda]
                                      [--cases 3] [--stats-texts 200] [--batch-sizes 1,4,8]
                                      [--ablation] [--profile-split] [--json-out FILE]

Reports, from one run on one machine:
- statistics throughput (tokens/s) of the engine and of the reference (full forwards, LM head included);
- per-edit time (v* + keys + update, ROME variant) of both, edits interleaved, and the ΔW relative difference;
- batched throughput: edits per minute when the engine optimises 1, 4 or 8 requests per forward;
- with ``--ablation``: what each of the engine's savings gives (prefix cache, blocks below the edit layer
  run once), each switched off in turn on the same cases;
- with ``--profile-split``: one edit under torch.profiler, split into blocks below the edit layer,
  the edit layer and above (forward), the LM head, backward, optimiser, and the rest (bookkeeping).

The reference is ``rome_collapse.reference`` (shares no code with the engine's v* loop, keys or update).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from rome_collapse import data, keys, models, reference, rome, stats, values
from rome_collapse.models import get_module


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed(device, fn):
    sync(device)
    start = time.perf_counter()
    result = fn()
    sync(device)
    return result, time.perf_counter() - start


def random_gpt2_xl(tokenizer, device):
    """A model shaped like gpt2-xl (48 layers, d=1600, edit layer 17) with random weights and SmolLM2's tokenizer."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=1600, n_layer=48, n_head=25, n_positions=1024)
    model = GPT2LMHeadModel(config).to(device).eval()
    return models.from_model(model, tokenizer, name="random-gpt2-xl", hparams=models.hparams_for("gpt2-xl"))


def engine_edit(bundle, cases, templates, C) -> list:
    """The engine's whole edit for ``cases`` (v* in one batch, keys, the ROME update), with no v* cache."""
    return rome.compute_edits(bundle, cases, templates, C, ("rome",), batch_size=len(cases), cache=False,
                              progress=False)["rome"]


def reference_edit(bundle, case, templates, C):
    layer = bundle.hparams.layer
    v_star, steps = reference.value(bundle, case, templates, layer, bundle.hparams)
    k_u, k_bar = reference.keys(bundle, case, templates, layer)
    delta = reference.update(bundle.weight(layer), rome._bias(bundle, layer), None if C.is_identity else C.matrix,
                             k_u, k_bar, v_star, "rome")
    return delta, steps


def profile_split(bundle, case, templates) -> dict:
    """Seconds of one edit's v* optimisation by part: forward time per group of blocks and of the LM head
    from hooks (wall clock, synchronised on CUDA), backward and optimiser from torch.profiler."""
    from torch.profiler import ProfilerActivity, profile

    layer, device = bundle.hparams.layer, bundle.device
    blocks = get_module(bundle.model, bundle.spec.layers)
    parts = {"forward: blocks below the edit layer": 0.0, "forward: the edit layer and above": 0.0, "LM head": 0.0}
    started, handles = {}, []

    def timer(name, key):
        def begin(module, *args):
            sync(device)
            started[key] = time.perf_counter()

        def end(module, args, output):
            sync(device)
            parts[name] += time.perf_counter() - started.pop(key)  # a forward stopped early never gets here
        return begin, end

    for i, block in enumerate(blocks):
        if type(block).__name__ == "_GivenHidden":
            continue
        begin, end = timer("forward: blocks below the edit layer" if i < layer else "forward: the edit layer and above", i)
        handles += [block.register_forward_pre_hook(begin), block.register_forward_hook(end)]
    begin, end = timer("LM head", "head")
    lm_head = get_module(bundle.model, bundle.spec.lm_head)
    handles += [lm_head.register_forward_pre_hook(begin), lm_head.register_forward_hook(end)]
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    try:
        values.optimize_values(bundle, [case], templates)  # warm-up
        for name in parts:
            parts[name] = 0.0
        with profile(activities=activities) as prof:
            (value,), wall = timed(device, lambda: values.optimize_values(bundle, [case], templates))
    finally:
        for h in handles:
            h.remove()
    events = prof.key_averages()
    backward = sum(e.cpu_time_total for e in events if e.key.startswith("autograd::engine::evaluate_function")) / 1e6
    optimizer = sum(e.cpu_time_total for e in events if e.key.startswith("Optimizer.step")) / 1e6
    split = {"wall_s": round(wall, 3), "steps": value.steps, **{k: round(v, 3) for k, v in parts.items()},
             "backward": round(backward, 3), "optimizer": round(optimizer, 3)}
    split["rest (loss, indexing, bookkeeping)"] = round(wall - sum(parts.values()) - backward - optimizer, 3)
    top_ops = sorted((e for e in events if e.key.startswith("aten::")), key=lambda e: -e.self_cpu_time_total)[:6]
    split["top_ops_self_cpu_s"] = {e.key: round(e.self_cpu_time_total / 1e6, 3) for e in top_ops}
    return split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=models.DEFAULT_MODEL)
    parser.add_argument("--random-gpt2-xl", action="store_true", help="gpt2-xl-shaped model, random weights")
    parser.add_argument("--device", default=None)
    parser.add_argument("--cases", type=int, default=3, help="edits timed per path")
    parser.add_argument("--stats-texts", type=int, default=200)
    parser.add_argument("--batch-sizes", default="1,4,8", help="engine batch sizes for the throughput table ('' skips it)")
    parser.add_argument("--ablation", action="store_true", help="time each of the engine's savings switched off")
    parser.add_argument("--profile-split", action="store_true", help="torch.profiler split of one edit")
    parser.add_argument("--steps", type=int, default=None, help="override v_num_grad_steps")
    parser.add_argument("--json-out", default=None, help="also write the summary here")
    args = parser.parse_args()

    bundle = models.load_model(args.model, device=args.device)
    if args.random_gpt2_xl:
        bundle = random_gpt2_xl(bundle.tokenizer, bundle.device)
    if args.steps:
        bundle = bundle.with_hparams(v_num_grad_steps=args.steps)
    layer, device = bundle.hparams.layer, bundle.device
    texts = data.statistics_corpus(args.stats_texts)
    templates = keys.context_templates(bundle, seed=0, cache=not args.random_gpt2_xl)
    C = stats.covariance(bundle, "paper")  # the paper's setting: C = I

    # Statistics: the engine's truncated, length-sorted batches against full forwards.
    (engine_C, n_tokens), engine_stats_s = timed(device, lambda: stats.compute_second_moment(bundle, layer, texts, progress=False))
    (reference_C, _), reference_stats_s = timed(device, lambda: reference.second_moment(bundle, layer, texts))
    c_diff = ((engine_C - reference_C).norm() / reference_C.norm()).item()

    # Per-edit time, interleaved, one request at a time on both sides.
    cases = data.curated_cases()[: max(args.cases, 8)]
    rows = []
    for case in cases[: args.cases]:
        (edit,), engine_s = timed(device, lambda: engine_edit(bundle, [case], templates, C))
        (ref_delta, ref_steps), reference_s = timed(device, lambda: reference_edit(bundle, case, templates, C))
        rows.append({"case_id": case.case_id, "subject": case.subject, "steps": edit.value.steps,
                     "reference_steps": ref_steps, "engine_s": engine_s, "reference_s": reference_s,
                     "delta_rel_diff": ((edit.delta.double() - ref_delta).norm() / ref_delta.norm()).item()})
        print(f"  case {case.case_id:>4} {case.subject:<20} steps {edit.value.steps:>2}/{ref_steps:>2}  "
              f"engine {engine_s:6.2f} s  reference {reference_s:6.2f} s  ΔW rel diff {rows[-1]['delta_rel_diff']:.1e}",
              flush=True)

    summary = {
        "model": bundle.name, "device": str(device), "layer": layer, "setting": C.setting,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads"
                   + (f", {torch.cuda.get_device_name()}" if device.type == "cuda" else ""),
        "stats_tokens": n_tokens,
        "stats_tokens_per_s_engine": round(n_tokens / engine_stats_s),
        "stats_tokens_per_s_reference": round(n_tokens / reference_stats_s),
        "stats_speedup": round(reference_stats_s / engine_stats_s, 2),
        "stats_rel_diff": c_diff,
        "edit_s_engine": round(sum(r["engine_s"] for r in rows) / len(rows), 3),
        "edit_s_reference": round(sum(r["reference_s"] for r in rows) / len(rows), 3),
        "edit_speedup_median": round(statistics.median(r["reference_s"] / r["engine_s"] for r in rows), 2),
        "edit_speedup_total": round(sum(r["reference_s"] for r in rows) / sum(r["engine_s"] for r in rows), 2),
        "max_delta_rel_diff": max(r["delta_rel_diff"] for r in rows),
        "edits": rows,
    }

    # Batched throughput: the same requests, b per forward.
    batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b]
    if batch_sizes:
        n = max(batch_sizes)
        summary["batched_edits_per_minute"] = {}
        for b in batch_sizes:
            _, seconds = timed(device, lambda: [engine_edit(bundle, cases[i:i + b], templates, C) for i in range(0, n, b)])
            summary["batched_edits_per_minute"][str(b)] = round(60 * n / seconds, 1)
            print(f"  batch {b}: {n} edits in {seconds:.1f} s ({60 * n / seconds:.1f} edits/min)", flush=True)

    # What each saving gives: the same cases with it switched off.
    if args.ablation:
        variants = {"plain batched loop": dict(prefix_cache=False, skip_lower_blocks=False),
                    "+ prefix cache": dict(prefix_cache=True, skip_lower_blocks=False),
                    "+ blocks below the edit layer once (engine)": dict(prefix_cache=True, skip_lower_blocks=True)}
        times = {name: [] for name in variants}
        for case in cases[: args.cases]:
            for name, switches in variants.items():  # interleaved, so drift hits all alike
                times[name].append(timed(device, lambda: values.optimize_values(bundle, [case], templates, **switches))[1])
        summary["ablation_v_star_s"] = {name: round(statistics.mean(t), 3) for name, t in times.items()}

    if args.profile_split:
        summary["profile_split"] = profile_split(bundle, cases[0], templates)

    print(json.dumps(summary))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
