"""Run sizes shared by the notebooks, the tests and the CLI.

``smoke`` keeps every notebook short on a 2-core CPU (CI: it checks that every cell runs, not the findings);
``full`` is the real run; ``large`` is ``full`` at the paper's sizes on CounterFact (every record the scan flags,
1,000 normal records, every period subject), for a GPU or a long CPU run (``-p profile large`` in notebooks 11, 12). The profiles share cache entries
with each other's runs where the settings agree.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .models import Bundle


@dataclass(frozen=True)
class Profile:
    name: str
    stats_samples: int  # texts for C (the statistics corpus has 9,950)
    cases_per_group: int  # collapse-prone and normal cases taken from the curated set
    ppl_set: str  # ME-PPL set for perplexity ("50", "1k", "10k"; "50:10": the first 10 sentences of "50")
    template_seed: int = 0
    predict_cases_per_group: int = 30  # notebook 08 (does the pre-flight ratio predict the collapse?): per group
    sequential_edits: int = 30  # edits per stream in notebook 09 (sequential editing)
    sequential_ppl_every: int = 3  # notebook 09 measures perplexity (and retained efficacy) every this many edits
    sequential_settings: tuple[str, ...] = ("paper", "original")  # notebook 09: the settings whose streams are run
    bos_cases: int = 4  # notebook 03, Part 2: at most this many subject-first cases edited on the BOS model (slow)
    concentration_texts: int = 300  # notebook 05: sentences whose first and later tokens are compared
    layer_sweep_cases_per_group: int = 6  # notebook 05, Part 2: cases per group in the denominator-ratio layer sweep
    layer_sweep_stats_samples: int = 500  # notebook 05, Part 2: texts for C at each swept layer ("original" setting)
    layer_sweep_first_half: bool = True  # notebook 05, Part 2: sweep layers 1 … L/2; False: the edit layer ± 1
    clamp_study_cases: int = 6  # notebook 10 (the v* clamp study): collapse-prone cases (5 v* and 10 edits each)
    clamp_study_normal_cases: int = 2  # notebook 10: normal cases, to check the variants leave them alone
    # v* optimisation steps; None: the model's own (ROME's 20-25). The smoke run takes a few: v* is most of a
    # notebook's time, and the smoke run checks that every cell runs, not how well the edits land.
    value_steps: int | None = None
    # The paper's protocol on CounterFact (notebooks 11 and 12, both shared splits, 20,000 records): how many records
    # the scan screens (a seeded sample; None: every one), how many of those it flags (at risk) are edited (a seeded
    # sample; None: every one) and how many unflagged ("normal") ones beside them (a seeded random sample).
    counterfact_scan: int | None = None
    counterfact_flagged: int | None = 30
    counterfact_normal: int = 100
    # Table 3 (notebook 12): records whose subject ends in a period (73 in the two splits), a seeded sample edited on
    # the default model (None: all), and on the BOS model in each BOS variant.
    period_cases: int | None = 30
    period_bos_cases: int = 10
    # Figures 4-5 on CounterFact (notebook 12): the BOS model scans its one-token-first records and this many others.
    bos_scan_others: int = 200

    def to_dict(self) -> dict:
        return asdict(self)

    def sized(self, bundle: "Bundle") -> "Bundle":
        """The bundle as this profile runs it (its v* steps); the same model and weights."""
        return bundle if self.value_steps is None else bundle.with_hparams(v_num_grad_steps=self.value_steps)


PROFILES = {
    "smoke": Profile("smoke", stats_samples=1000, cases_per_group=2, ppl_set="50:10", sequential_edits=4,
                     sequential_ppl_every=1, predict_cases_per_group=3, sequential_settings=("paper",),
                     bos_cases=1, concentration_texts=50, layer_sweep_cases_per_group=2, layer_sweep_stats_samples=200,
                     layer_sweep_first_half=False, clamp_study_cases=1, clamp_study_normal_cases=1, value_steps=5,
                     counterfact_scan=300, counterfact_flagged=2, counterfact_normal=2, period_cases=2,
                     period_bos_cases=1, bos_scan_others=20),
    "full": Profile("full", stats_samples=9950, cases_per_group=12, ppl_set="50", sequential_edits=30,
                    sequential_ppl_every=3, predict_cases_per_group=30, sequential_settings=("paper", "original"),
                    bos_cases=4, concentration_texts=300, layer_sweep_cases_per_group=6, layer_sweep_stats_samples=500,
                    layer_sweep_first_half=True, clamp_study_cases=6, clamp_study_normal_cases=2),
}
# The paper's sizes: every collapse-prone (flagged) record edited and 1,000 normal ones (its Table 2 samples 1,000
# records of CounterFact besides HardCF); everything else as in full.
PROFILES["large"] = replace(PROFILES["full"], name="large", counterfact_flagged=None, counterfact_normal=1000,
                            period_cases=None, period_bos_cases=73, bos_scan_others=1000)


# The notebooks beyond the paper and the CounterFact protocol's (11, 12) state how long their full run may take (minutes; the default model on this
# workplace's 2-core CPU, every cache empty, so the v* of the run included), in their opening cell. make reproduce
# records each run's time in figures/reproduce_timings.csv; tests/test_reproduce.py checks the committed runs kept
# within these budgets and that each notebook states its own.
TIME_BUDGETS_MIN = {"08_predict_collapse": 25, "09_sequential": 30, "10_clamp_study": 30, "11_counterfact": 65,
                    "12_table3": 20}


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; use one of {', '.join(PROFILES)}")
    return PROFILES[name]
