"""Run sizes shared by the notebooks, the tests and the CLI.

``smoke`` keeps every notebook to seconds on a 2-core CPU (CI); ``full`` is the real run.
Both profiles share cache entries with each other's runs where the settings agree.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Profile:
    name: str
    stats_samples: int  # texts for C (the statistics corpus has 9,950)
    cases_per_group: int  # collapse-prone and normal cases taken from the curated set
    ppl_set: str  # ME-PPL set for perplexity
    template_seed: int = 0
    predict_cases_per_group: int = 30  # notebook 08 (does the pre-flight ratio predict the collapse?): per group
    sequential_edits: int = 30  # edits per stream in notebook 09 (sequential editing)
    sequential_ppl_every: int = 3  # notebook 09 measures perplexity (and retained efficacy) every this many edits

    def to_dict(self) -> dict:
        return asdict(self)


PROFILES = {
    "smoke": Profile("smoke", stats_samples=1000, cases_per_group=2, ppl_set="50", sequential_edits=4,
                     sequential_ppl_every=1, predict_cases_per_group=3),
    "full": Profile("full", stats_samples=9950, cases_per_group=12, ppl_set="50", sequential_edits=30,
                    sequential_ppl_every=3, predict_cases_per_group=30),
}


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; use one of {', '.join(PROFILES)}")
    return PROFILES[name]
