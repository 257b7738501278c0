#!/usr/bin/env python
"""Choose the ROME edit layer of a model by causal tracing of MLP contributions (Meng et al. 2022, §2).

For each known fact (prompt, subject, target):
  clean      p_clean   = P(first token of " " + target | prompt)
  corrupted  p_corrupt = the same with Gaussian noise (std = 3 x the embeddings' std) added to the
             subject's input embeddings, averaged over --samples noise draws
  restored   p_restored(l): corrupted, but the MLP outputs at the subject's last token are set back
             to their clean values for a window of layers centred at l
  IE(l) = p_restored(l) - p_corrupt.
The chosen layer is the peak of the mean IE over facts among the early-middle layers (l < L/2),
leaving out windows that restore MLP 0 (an extended embedding: restoring it undoes the noise
itself); --include-layer0 keeps them.
One forward pass per fact: row 0 runs clean and its MLP outputs patch the other rows in the same
pass (as ROME's trace_with_patch); rows = 1 + samples x (1 + num_layers).

    python scripts/choose_edit_layer.py --model smollm2-135m [--seed 0] [--out figures]
"""
import argparse
import time
from contextlib import ExitStack
from pathlib import Path

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator
import pandas as pd
import seaborn as sns
import torch
from tqdm.auto import tqdm

from rome_collapse.models import load_model
from rome_collapse.tokens import encode, subject_token_span
from rome_collapse.trace import forward_hook, lm_logits, run_base

FACTS = [  # (prompt, subject, true target)
    ("The mother tongue of {} is", "Danielle Darrieux", "French"),
    ("{} is located in the country of", "Paris", "France"),
    ("The capital city of {} is", "Japan", "Tokyo"),
    ("{} was founded by", "Microsoft", "Bill"),
    ("{} is the capital of", "Berlin", "Germany"),
    ("The official language of {} is", "Brazil", "Portuguese"),
    ("{} is located in the city of", "The Eiffel Tower", "Paris"),
    ("The currency of {} is the", "Japan", "yen"),
    ("{} was developed by", "the iPhone", "Apple"),
    ("The play {} was written by", "Romeo and Juliet", "William"),
    ("{} is the capital city of", "Rome", "Italy"),
    ("The theory of relativity was developed by {}, who was born in", "Albert Einstein", "Germany"),
    ("{} plays the sport of", "Lionel Messi", "football"),
    ("The headquarters of {} are in the country of", "Toyota", "Japan"),
]


def first_target_id(b, target):
    return b.tokenizer(" " + target, add_special_tokens=False).input_ids[0]


@torch.no_grad()
def last_token_probs(b, texts, target_ids):
    """P(target_ids[i] | texts[i]) at each text's last token, in one right-padded batch."""
    batch = encode(b, texts)
    hidden = run_base(b, batch).last_hidden_state
    last = hidden[torch.arange(len(texts)), batch.lengths - 1]
    return lm_logits(b, last).softmax(-1)[torch.arange(len(texts)), torch.tensor(target_ids)]


def window_of(centre, window, num_layers):
    """The layers restored around a centre, clipped at the ends (as ROME's trace_important_window)."""
    return range(max(0, centre - window // 2), min(num_layers, centre - (-window // 2)))


@torch.no_grad()
def trace_fact(b, prompt, subject, target_id, noise, window):
    """p_clean, p_corrupt and p_restored per layer (tensor of num_layers) for one fact."""
    L, S = b.num_layers, noise.shape[0]
    first, last = subject_token_span(b, prompt, subject)
    rows = 1 + S * (1 + L)  # clean | corrupted | restored around layer 0 | ... | layer L-1
    batch = encode(b, [prompt.format(subject)] * rows)
    noise_rows = noise[:, : last - first + 1].repeat(1 + L, 1, 1)

    def add_noise(module, args, output):  # in place: the outputs are fresh tensors under no_grad
        output[1:, first: last + 1] += noise_rows.to(output.dtype)

    def restore(rows_to_patch):
        def hook(module, args, output):
            output[rows_to_patch, last] = output[0, last]
        return hook

    with ExitStack() as hooks:
        hooks.enter_context(forward_hook(b.model.get_input_embeddings(), add_noise))
        for m in range(L):  # the rows of centre c restore layer m when m is in c's window
            centres = [c for c in range(L) if m in window_of(c, window, L)]
            patch = torch.tensor([1 + S * (1 + c) + s for c in centres for s in range(S)])
            hooks.enter_context(forward_hook(b.layer(m).mlp, restore(patch)))
        hidden = run_base(b, batch).last_hidden_state[:, -1]
    p = lm_logits(b, hidden).softmax(-1)[:, target_id]
    return p[0].item(), p[1: 1 + S].mean().item(), p[1 + S:].view(L, S).mean(1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="figures")
    ap.add_argument("--samples", type=int, default=5, help="noise samples per fact")
    ap.add_argument("--window", type=int, help="layers restored per centre (default: round(L/6))")
    ap.add_argument("--include-layer0", action="store_true",
                    help="let windows that restore MLP 0 be chosen (MLP 0 acts as an extended embedding)")
    args = ap.parse_args()
    start = time.time()
    torch.manual_seed(args.seed)
    b = load_model(args.model)
    L = b.num_layers
    window = min(L, max(1, args.window or round(L / 6)))

    # Keep the facts the clean model knows (first target token with probability >= 0.05).
    target_ids = [first_target_id(b, t) for _, _, t in FACTS]
    p_known = last_token_probs(b, [p.format(s) for p, s, _ in FACTS], target_ids)
    facts = [(f, i) for f, i, p in zip(FACTS, target_ids, p_known.tolist()) if p >= 0.05]
    for (prompt, subject, target), p in zip(FACTS, p_known.tolist()):
        print(f"{'kept   ' if p >= 0.05 else 'dropped'} p={p:.3f}  {prompt.format(subject)!r} -> {target!r}")
    if not facts:
        raise SystemExit("no known facts: nothing to trace")

    # Noise as ROME: std = 3 x the std of the (scaled, for Gemma) input embeddings; same draws for every fact.
    emb = b.model.get_input_embeddings()
    std = 3 * emb.weight.std().item() * float(getattr(emb, "embed_scale", 1.0))
    span = max(subject_token_span(b, p, s)[1] - subject_token_span(b, p, s)[0] + 1 for (p, s, _), _ in facts)
    noise = (torch.randn(args.samples, span, emb.weight.shape[1]) * std).to(b.device)

    records = []
    for (prompt, subject, target), tid in tqdm(facts, desc=f"tracing {args.model}"):
        p_clean, p_corrupt, p_restored = trace_fact(b, prompt, subject, tid, noise, window)
        for layer, p in enumerate(p_restored.tolist()):
            records.append(dict(model=args.model, fact=prompt.format(subject) + " " + target, layer=layer,
                                indirect_effect=p - p_corrupt, p_clean=p_clean, p_corrupt=p_corrupt))
    df = pd.DataFrame(records)

    mean_ie = df.groupby("layer")["indirect_effect"].mean()
    early = mean_ie[mean_ie.index < L / 2]
    # Restoring MLP 0 at the subject token re-writes the token's identity (its output dwarfs the
    # embedding and the noise): that is de-noising, not recall, so its windows are not candidates.
    no_mlp0 = early[[0 not in window_of(c, window, L) for c in early.index]]
    candidates = early if args.include_layer0 or no_mlp0.empty else no_mlp0
    chosen = int(candidates.idxmax())
    per_fact = df.drop_duplicates("fact")
    print(f"\n{len(facts)} facts, window {window}, noise std {std:.3f}; "
          f"mean p_clean {per_fact.p_clean.mean():.3f}, mean p_corrupt {per_fact.p_corrupt.mean():.3f}")
    print("layer  mean IE\n" + "\n".join(f"{l:5d}  {v:+.4f}{'  <- chosen' if l == chosen else ''}"
                                         for l, v in mean_ie.items()))
    print(f"peak of mean IE among layers < {L / 2:g}: {int(early.idxmax())}; "
          f"the same without windows that restore MLP 0: {int(no_mlp0.idxmax()) if len(no_mlp0) else '-'}")
    print(f"chosen edit layer for {args.model}: {chosen}")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / f"edit_layer_sweep_{args.model}.csv", index=False)
    fig, ax = plt.subplots(figsize=(7, 4))
    sns.lineplot(df, x="layer", y="indirect_effect", errorbar=("ci", 95), seed=args.seed, marker="o", ax=ax)
    ax.axvspan(candidates.index.min() - 0.5, candidates.index.max() + 0.5, color="grey", alpha=0.12,
               label="candidate centres")
    ax.axvline(chosen, color="tab:red", ls="--", label=f"chosen layer {chosen}")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set(ylabel="MLP indirect effect  p_restored − p_corrupt",
           title=f"Causal tracing of MLP outputs at the subject's last token\n"
                 f"{args.model}, window {window}, {len(facts)} facts (band: 95% CI over facts)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / f"edit_layer_sweep_{args.model}.png", dpi=150)
    print(f"wrote {out}/edit_layer_sweep_{args.model}.csv and .png  ({time.time() - start:.0f} s)")


if __name__ == "__main__":
    main()
