"""Experiments: arms declared in campaign files, deterministic assignment with
a fixed holdout, delivery feedback in, Thompson-sampling allocation out.

    config.py    the ``experiment:`` block of a campaign file; arm definitions and fingerprints
    assign.py    user -> holdout or arm (a hash and an interval layout), the Ray Data stage
    stats.py     Wilson intervals, lift over holdout
    bandit.py    the night's allocation from the feedback table, and its manifest record
    night.py     the nightly run's one call per experiment: check, allocate, pin; the report's history
    table.py     the feedback table's columns and how a reader finds it
    feedback.py  the feedback ingestion job (Ray Data): events x published rows -> feedback table
    report.py    the run report's Experiments section
    simulate.py  synthetic nights: how fast the bandit finds the better arm, and its regret
"""
