"""rome_collapse: the math of ROME edits and of their collapse, for the workbook's notebooks.

Modules: models (loading, architecture spec, hyper-parameters), tokens (BOS switch, subject
positions), data (edit cases, ME-PPL), cache (every disk cache: keys, digests, atomic writes), stats (key
second moment C), keys (context templates, prefixed and unprefixed keys), values (v*, optimised and cached),
rome (the rank-one update, the pre-flight check, applying edits), trace (hooks), metrics
(efficacy, generalisation, locality, perplexity), collapse (what counts as a collapse), samples (cases by
group, texts, positions), outcomes (edits applied alone and measured), representations (where keys and
token states sit, their concentration), interventions (position swaps, BOS removal), plots.
"""
import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())
