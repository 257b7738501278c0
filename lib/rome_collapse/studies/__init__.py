"""The studies beyond the paper, one module per notebook: each runs its measurements through the package's
single-edit path (``outcomes``) or, for edit streams, its own small loop, and hands tables to ``rules.beyond``.

* :mod:`.screening` (notebook 08): how well the pre-flight ratio predicts a collapse (ROC, catch-all thresholds).
* :mod:`.sequential` and :mod:`.sequential_results` (notebook 09): edits applied one after another, and the tables
  over the runs.
* :mod:`.clamp_study` (notebook 10): ways of setting up v* and what C-ROME's edits make of them.
"""
