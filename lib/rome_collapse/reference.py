"""A plain ROME, written the way the authors' code works, to time the engine against and check it by.

It lives in the package so that tests and benchmarks import it like any module, yet imports nothing from the
engine (values, keys, rome, stats): it shares with the engine only the model bundle (weights, tokenizer, module
paths) and the context templates; its tokenisation and subject positions, its loss, its keys and its update
formula are its own. It follows EasyEdit's ``compute_v`` (the code the paper's authors ran): every prompt of
a request in one right-padded batch through the whole model, logits at every position over the whole
vocabulary, δ added at the subject's last token by a hook on the projection's output, weight gradients
off, Adam, norm clamp, early stop at loss 0.05. The keys come from one full forward per prompt, the
statistics from full forwards (LM head included) over fixed-size batches.
"""
from __future__ import annotations

import torch

EARLY_STOP_LOSS = 5e-2  # compute_v: `if loss < 5e-2: break`


def _ids(bundle, text: str) -> list[int]:
    ids = bundle.tokenizer(text, add_special_tokens=False).input_ids
    return ([bundle.tokenizer.bos_token_id] if bundle.add_bos else []) + ids


def subject_last_position(bundle, prompt_with_subject_slot: str, subject: str) -> int:
    """ROME's lookup: tokenise the text up to the end of the subject; its last token is the subject's last."""
    before = prompt_with_subject_slot[: prompt_with_subject_slot.index("{}")]
    return len(_ids(bundle, before + subject)) - 1


def _capture_input(bundle, layer):
    captured = {}
    handle = bundle.down_proj(layer).register_forward_hook(lambda m, a, o: captured.__setitem__("key", a[0].detach()))
    return captured, handle


def second_moment(bundle, layer: int, texts: list[str], max_length: int = 128, batch_size: int = 16):
    """Mean of k kᵀ over every token of ``texts``: full forwards, LM head included, fixed-size batches."""
    pad = bundle.tokenizer.pad_token_id or 0
    d_in = bundle.weight(layer).shape[1]
    total = torch.zeros(d_in, d_in, dtype=torch.float64, device=bundle.device)
    count = 0
    captured, handle = _capture_input(bundle, layer)
    try:
        for start in range(0, len(texts), batch_size):
            rows = [_ids(bundle, t)[:max_length] for t in texts[start:start + batch_size]]
            width = max(map(len, rows))
            ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=bundle.device)
            mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=bundle.device)
            with torch.no_grad():
                bundle.model(input_ids=ids, attention_mask=mask).logits  # noqa: B018
            keys = captured["key"][mask.bool()].double()
            total += keys.T @ keys
            count += keys.shape[0]
    finally:
        handle.remove()
    return total / count, count


def keys(bundle, case, templates: list[str], layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """kᵘ (the prompt alone) and k̄ (mean over the templates), one full forward per prompt."""
    captured, handle = _capture_input(bundle, layer)
    found = []
    try:
        for template in templates:
            text = template.format(case.prompt)
            ids = torch.tensor([_ids(bundle, text.format(case.subject))], device=bundle.device)
            with torch.no_grad():
                bundle.model(input_ids=ids)
            found.append(captured["key"][0, subject_last_position(bundle, text, case.subject)])
    finally:
        handle.remove()
    unprefixed = found[templates.index("{}")]
    return unprefixed, torch.stack(found).mean(0)


def value(bundle, case, templates: list[str], layer: int, hparams) -> tuple[torch.Tensor, int]:
    """v* = W kᵘ + b + δ, optimised as compute_v does. Returns v* and the number of steps run."""
    tok, dev = bundle.tokenizer, bundle.device
    target = tok(" " + case.target_new, add_special_tokens=False).input_ids
    prompts = [t.format(case.prompt) for t in templates] + ["{} is a"]
    n_rewrite = len(templates)
    rows = [_ids(bundle, p.format(case.subject)) + (target[:-1] if i < n_rewrite else [])
            for i, p in enumerate(prompts)]
    width = max(map(len, rows))
    pad = tok.pad_token_id or 0
    input_ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=dev)
    attention_mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=dev)
    # Each target token sits at the position whose logits predict it: the row is the prompt and the target
    # but its last token, so the last len(target) positions (from the prompt's last token on) are scored.
    labels = torch.full((n_rewrite, width), -100, device=dev)
    for i in range(n_rewrite):
        end = len(rows[i])
        labels[i, end - len(target):end] = torch.tensor(target, device=dev)
    lookups = [subject_last_position(bundle, p, case.subject) for p in prompts]

    real = torch.promote_types(bundle.weight(layer).dtype, torch.float32)  # float32, or float64 for a float64 model
    delta = torch.zeros(bundle.weight(layer).shape[0], device=dev, dtype=real, requires_grad=True)
    target_init = kl_init = None

    def add_delta(module, args, output):
        nonlocal target_init
        if target_init is None:
            target_init = output[0, lookups[0]].detach().clone()
        output = output.clone()
        for i, position in enumerate(lookups):
            output[i, position] = output[i, position] + delta
        return output

    opt = torch.optim.Adam([delta], lr=hparams.v_lr)
    bundle.model.requires_grad_(False)
    for step in range(hparams.v_num_grad_steps):
        opt.zero_grad()
        handle = bundle.down_proj(layer).register_forward_hook(add_delta)
        try:
            logits = bundle.model(input_ids=input_ids, attention_mask=attention_mask).logits
        finally:
            handle.remove()
        kl_log_probs = torch.log_softmax(logits[n_rewrite:, lookups[n_rewrite]], dim=1)
        if kl_init is None:
            kl_init = kl_log_probs.detach().clone()
        log_probs = torch.log_softmax(logits[:n_rewrite], dim=2)
        picked = torch.gather(log_probs, 2, labels.clamp(min=0).unsqueeze(2)).squeeze(2)
        mask = (labels != -100).float()
        nll = (-(picked * mask).sum(1) / len(target)).mean()
        kl = hparams.kl_factor * torch.nn.functional.kl_div(kl_init, kl_log_probs, log_target=True,
                                                            reduction="batchmean")
        loss = nll + kl + hparams.v_weight_decay * (delta.norm() / target_init.norm() ** 2)
        if loss < EARLY_STOP_LOSS or step == hparams.v_num_grad_steps - 1:
            break
        loss.backward()
        opt.step()
        max_norm = hparams.clamp_norm_factor * target_init.norm()
        if delta.norm() > max_norm:
            with torch.no_grad():
                delta[...] = delta * max_norm / delta.norm()
    return (target_init + delta).detach(), step + 1


def update(weight: torch.Tensor, bias, second_moment: torch.Tensor | None, unprefixed_key, prefixed_key,
           v_star, variant: str = "rome") -> torch.Tensor:
    """ΔW = (v* − W k − b) (C⁻¹k̄)ᵀ / ((C⁻¹k̄)ᵀ k), k = kᵘ (ROME) or k̄ (C-ROME); C = I when None. W is (out, in)."""
    W = weight.double()
    k_bar = prefixed_key.double()
    left = k_bar if second_moment is None else torch.linalg.solve(second_moment.double(), k_bar)
    key = unprefixed_key.double() if variant == "rome" else k_bar
    residual = v_star.double() - W @ key - (bias.double() if bias is not None else 0)
    return torch.outer(residual, left) / (left @ key)
