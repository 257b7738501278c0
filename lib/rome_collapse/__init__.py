"""rome_collapse: the math of ROME edits and of their collapse, for the workbook's notebooks.

Modules: models (loading, architecture spec, hyper-parameters), tokens (BOS switch, subject
positions), data (edit cases, ME-PPL), stats (key second moment C), keys (context templates,
prefixed and unprefixed keys), rome (v*, the rank-one update, applying edits), metrics
(efficacy, generalisation, locality, perplexity), interventions (position swaps), plots.
"""
import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())
