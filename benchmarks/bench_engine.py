#!/usr/bin/env python
"""Benchmark: this engine against a straightforward ROME path, on the same machine, in one run.

    python benchmarks/bench_engine.py [--model smollm2-135m | --random-gpt2-xl] [--device cuda] [--cases 3]

The reference path does what the original research code does: statistics from a full forward
(every layer and the LM head), and a v* loop that computes logits at every position and gradients
for every weight. The engine stops the statistics forward inside the edit layer, and optimises v*
with logits only where the loss reads them, no weight gradients, and the tokens before the
subject run once. Both give the same ΔW; the script checks it and prints the speed ratios.
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from rome_collapse import data, keys, models, rome, stats
from rome_collapse.rome import EARLY_STOP_LOSS, _build_rows
from rome_collapse.tokens import pad_batch, token_ids


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


# ---------------------------------------------------------------------------------------------
# Reference path
# ---------------------------------------------------------------------------------------------
def reference_second_moment(bundle, layer, texts, max_length=128, batch_size=16):
    """Full forward (all layers, logits), unsorted fixed-size batches, as research code does."""
    d_in = bundle.weight(layer).shape[1]
    total = torch.zeros(d_in, d_in, dtype=torch.float64, device=bundle.device)
    count, captured = 0, {}
    handle = bundle.down_proj(layer).register_forward_hook(lambda m, a, o: captured.__setitem__("k", a[0]))
    try:
        for start in range(0, len(texts), batch_size):
            rows = [token_ids(bundle, t)[:max_length] for t in texts[start:start + batch_size]]
            batch = pad_batch(bundle, rows)
            with torch.no_grad():
                bundle.model(**batch.model_inputs()).logits  # noqa: B018  (the full model, LM head included)
            k = captured["k"][batch.attention_mask.bool()].double()
            total += k.T @ k
            count += k.shape[0]
    finally:
        handle.remove()
    return total / count, count


def reference_value(bundle, case, templates, layer):
    """ROME's compute_v, plainly: full logits, weight gradients on, one request."""
    hp = bundle.hparams
    rows = _build_rows(bundle, [case], templates)
    bundle.model.requires_grad_(True)  # as in research code that never turns weight gradients off
    delta = torch.zeros(bundle.weight(layer).shape[0], device=bundle.device, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=hp.v_lr)
    target_init = kl_init = None
    n_rows = rows.input_ids.shape[0]

    def add_delta(module, args, output):
        nonlocal target_init
        if target_init is None:
            target_init = output[0, rows.lookup[0]].detach().clone()
        out = output.clone()
        out[torch.arange(n_rows), rows.lookup] += delta
        return out

    try:
        for it in range(hp.v_num_grad_steps):
            opt.zero_grad()
            bundle.model.zero_grad(set_to_none=True)
            handle = bundle.down_proj(layer).register_forward_hook(add_delta)
            try:
                logits = bundle.model(input_ids=rows.input_ids, attention_mask=rows.attention_mask).logits
            finally:
                handle.remove()
            log_probs = torch.log_softmax(logits, dim=2)  # every position, whole vocabulary
            picked = log_probs[rows.target_row, rows.target_pos, rows.target_tok]
            nll = -(picked * rows.target_weight).sum()
            kl_lp = log_probs[rows.kl_row, rows.lookup[rows.kl_row]]
            if kl_init is None:
                kl_init = kl_lp.detach().clone()
            kl = hp.kl_factor * (kl_lp.exp() * (kl_lp - kl_init)).sum()
            loss = nll + kl + hp.v_weight_decay * delta.norm() / target_init.norm() ** 2
            if loss.item() < EARLY_STOP_LOSS or it == hp.v_num_grad_steps - 1:
                break
            loss.backward()  # gradients for delta and for every weight of the model
            opt.step()
            max_norm = hp.clamp_norm_factor * target_init.norm()
            if delta.norm() > max_norm:
                with torch.no_grad():
                    delta.mul_(max_norm / delta.norm())
    finally:
        bundle.model.requires_grad_(False)
        bundle.model.zero_grad(set_to_none=True)
    return target_init + delta.detach(), it + 1


def reference_keys(bundle, case, templates, layer):
    """kᵘ and k̄ from full forwards, one prompt at a time."""
    captured = {}
    handle = bundle.down_proj(layer).register_forward_hook(lambda m, a, o: captured.__setitem__("k", a[0]))
    found = []
    try:
        for lookup in keys.subject_lookups(bundle, case.prompt, case.subject, templates):
            with torch.no_grad():
                bundle.model(torch.tensor([token_ids(bundle, lookup.text)], device=bundle.device))
            found.append(captured["k"][0, lookup.position])
    finally:
        handle.remove()
    found = torch.stack(found)
    return found[0], found.mean(0)


# ---------------------------------------------------------------------------------------------
def random_gpt2_xl(tokenizer, device):
    """A model shaped like gpt2-xl (48 layers, d=1600) with random weights and SmolLM2's tokenizer."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=1600, n_layer=48, n_head=25, n_positions=1024)
    model = GPT2LMHeadModel(config).to(device)
    return models.from_model(model, tokenizer, name="random-gpt2-xl", hparams=models.hparams_for("gpt2-xl"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=models.DEFAULT_MODEL)
    parser.add_argument("--random-gpt2-xl", action="store_true", help="gpt2-xl-shaped model, random weights")
    parser.add_argument("--device", default=None)
    parser.add_argument("--cases", type=int, default=3, help="edits timed per path")
    parser.add_argument("--stats-texts", type=int, default=200)
    parser.add_argument("--steps", type=int, default=None, help="override v_num_grad_steps")
    args = parser.parse_args()

    bundle = models.load_model(args.model, device=args.device)
    if args.random_gpt2_xl:
        bundle = random_gpt2_xl(bundle.tokenizer, bundle.device)
    if args.steps:
        bundle.hparams = bundle.hparams.replace(v_num_grad_steps=args.steps)
    layer, device = bundle.hparams.layer, bundle.device
    texts = data.statistics_corpus(args.stats_texts)
    cases = data.curated_cases()[: args.cases]
    templates = keys.context_templates(bundle, seed=0, cache=False)

    # Statistics
    results = {}
    for name, fn in (("engine", lambda: stats.compute_second_moment(bundle, layer, texts, progress=False)),
                     ("reference", lambda: reference_second_moment(bundle, layer, texts))):
        sync(device)
        start = time.perf_counter()
        matrix, n_tokens = fn()
        sync(device)
        results[name] = {"C": matrix, "stats_tokens_per_s": n_tokens / (time.perf_counter() - start)}
    c_diff = ((results["engine"]["C"] - results["reference"]["C"]).norm() / results["reference"]["C"].norm()).item()
    second_moment = stats.SecondMoment(results["engine"]["C"], 0, {})

    # Edits (rome variant: the update that collapses; both paths give the same ΔW)
    rows = []
    for case in cases:
        sync(device)
        start = time.perf_counter()
        value = rome.optimize_values(bundle, [case], templates, layer)[0]
        ck = keys.case_keys(bundle, case.prompt, case.subject, templates, layer)
        engine_delta, _ = rome.rank_one_update(bundle.weight(layer), second_moment, ck.unprefixed_key,
                                               ck.prefixed_key, value.v_star, "rome")
        sync(device)
        engine_s = time.perf_counter() - start
        start = time.perf_counter()
        v_star, steps = reference_value(bundle, case, templates, layer)
        k_u, k_bar = reference_keys(bundle, case, templates, layer)
        ref_delta, _ = rome.rank_one_update(bundle.weight(layer), second_moment, k_u, k_bar, v_star, "rome")
        sync(device)
        reference_s = time.perf_counter() - start
        rows.append({"case_id": case.case_id, "subject": case.subject, "steps": value.steps, "reference_steps": steps,
                     "engine_s": engine_s, "reference_s": reference_s,
                     "delta_rel_diff": ((engine_delta - ref_delta).norm() / ref_delta.norm()).item()})

    engine_total = sum(r["engine_s"] for r in rows)
    reference_total = sum(r["reference_s"] for r in rows)
    summary = {
        "model": bundle.name, "device": str(device), "layer": layer,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads"
                   + (f", {torch.cuda.get_device_name()}" if device.type == "cuda" else ""),
        "stats_tokens_per_s_engine": round(results["engine"]["stats_tokens_per_s"]),
        "stats_tokens_per_s_reference": round(results["reference"]["stats_tokens_per_s"]),
        "stats_speedup": round(results["engine"]["stats_tokens_per_s"] / results["reference"]["stats_tokens_per_s"], 2),
        "stats_rel_diff": c_diff,
        "edit_s_engine": round(engine_total / len(rows), 2),
        "edit_s_reference": round(reference_total / len(rows), 2),
        "edit_speedup": round(reference_total / engine_total, 2),
        "max_delta_rel_diff": max(r["delta_rel_diff"] for r in rows),
    }
    for r in rows:
        print(f"  case {r['case_id']:>4} {r['subject']:<20} steps {r['steps']:>2}/{r['reference_steps']:>2}  "
              f"engine {r['engine_s']:6.2f} s  reference {r['reference_s']:6.2f} s  ΔW rel diff {r['delta_rel_diff']:.1e}")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
