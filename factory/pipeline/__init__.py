"""The nightly run: the driver plans by file, Ray does the row work.

    plan.py        prepare(): config, templates, inputs, lookup tables, model
                   and every store checked before Ray or an engine starts;
                   the run's scope and how its work is cut
    owed.py        which rows a pair owes (the one home of that rule)
    staging.py     pass 1: pairs checked -> dead letters, or product buckets;
                   then one Ray task per bucket stages the owed rows
    passes.py      the generation passes as data: first drafts, repair,
                   reuse; one loop runs them
    resume.py      what an earlier process of the attempt already wrote
    finish.py      exactly once, review queue, summary, report (from footers)
    publishing.py  the manifest, then the latest pointer and _SUCCESS (finished by a rerun)
    driver.py      run(): the steps above, in order

The output layout: docs/output.md. The passes as a picture: docs/architecture.md.
"""

from factory.pipeline.driver import run
from factory.pipeline.finish import IncompleteRun, RunResult
from factory.pipeline.plan import ConfigError, Plan, prepare, prompt_stages

__all__ = ["run", "RunResult", "IncompleteRun", "ConfigError", "Plan", "prepare", "prompt_stages"]
