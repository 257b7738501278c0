"""The tolerance helper (tests/tolerances.py) lets float rounding through and stops a real disagreement: the agreement
tests that use it can still fail."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import projection_inputs
from rome_collapse import data, keys, stats
from tolerances import assert_agree, forward_rounding, rounding, second_moment_rounding

PROMPT, SUBJECT = "The mother tongue of {} is", "Danielle Darrieux"
TEMPLATES = ["{}", "The weather was fine today. {}", "I wrote this down. {}"]


def test_the_bound_is_reductions_times_terms_times_eps(tiny):
    eps32, eps64 = torch.finfo(torch.float32).eps, torch.finfo(torch.float64).eps
    assert rounding(torch.float32, 128, steps=3) == 3 * 128 * eps32
    assert rounding(torch.float64, 10_000) == 10_000 * eps64
    # the tiny Llama's edit layer 1: two blocks (attention and MLP each), its projection 64 → 128 wide
    assert forward_rounding(tiny) == rounding(torch.float32, 128, steps=4) == forward_rounding(tiny, 1)
    assert forward_rounding(tiny, 0) == forward_rounding(tiny, 1) / 2
    assert second_moment_rounding(tiny, 500) == 2 * forward_rounding(tiny) + rounding(torch.float64, 500)


def test_a_key_read_two_ways_agrees_but_a_wrong_key_or_a_nudge_past_the_bound_does_not(tiny):
    batched = keys.case_keys(tiny, PROMPT, SUBJECT, TEMPLATES).unprefixed_key  # a row of the templates' batch
    alone = keys.unprefixed_key(tiny, PROMPT, SUBJECT)  # one prompt, unpadded
    tolerance = forward_rounding(tiny)
    assert_agree(batched, alone, tolerance)
    scale = alone.abs().max().item()
    assert (batched - alone).abs().max().item() < tolerance * scale  # inside even the scale-wide part of the bound

    nudged = alone.clone()
    nudged[0] += 3 * tolerance * (alone[0].abs().item() + scale)  # one entry past the bound
    with pytest.raises(AssertionError):
        assert_agree(nudged, alone, tolerance)
    first_token = keys.unprefixed_key(tiny, PROMPT, "Danielle")  # a real bug: the subject's first token, not its last
    with pytest.raises(AssertionError):
        assert_agree(first_token, alone, tolerance)
    other_layer = keys.case_keys(tiny, PROMPT, SUBJECT, TEMPLATES, layer=0).unprefixed_key  # another real bug
    with pytest.raises(AssertionError):
        assert_agree(other_layer, alone, tolerance)


def test_the_second_moment_read_two_ways_agrees_but_the_wrong_normalisation_does_not(tiny):
    texts = [c.text for c in data.curated_cases()[:40]]
    got = stats.second_moment(tiny, layer=1, texts=texts, cache=False, progress=False)
    k = projection_inputs(tiny, 1, texts)  # one text at a time: another batch than C's length-sorted ones
    n = k.shape[0]
    assert got.n_tokens == n
    tolerance = second_moment_rounding(tiny, n)
    assert_agree(got.matrix, k.T @ k / n, tolerance)
    assert 1 / n > 2 * tolerance  # so the bug below is visible at this size
    with pytest.raises(AssertionError):  # Σ k kᵀ / (n − 1): off by 1/n, an order above the rounding bound
        assert_agree(got.matrix, k.T @ k / (n - 1), tolerance)


def test_make_test_kernels_runs_on_torchs_plain_kernels():
    """`make test-kernels` (the second run of make test) really leaves the CPU's vector kernels: torch reads
    ATEN_CPU_CAPABILITY when it loads."""
    makefile = (Path(__file__).parents[1] / "Makefile").read_text()
    other = dict(pair.split("=", 1) for pair in re.search(r"^OTHER_KERNELS := (.+)$", makefile, re.M).group(1).split())
    assert other["ATEN_CPU_CAPABILITY"] == "default" and "MKL_CBWR" in other
    out = subprocess.run([sys.executable, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"],
                         env={**os.environ, **other}, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "DEFAULT"
