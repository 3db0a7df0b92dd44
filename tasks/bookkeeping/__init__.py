"""A run's bookkeeping: what must run (plan), DVC and git, the journal and lock, MLflow runs, summaries.

- plan.py        what DVC and the last successful run say must run; run a stage and record it in dvc.lock
- versioning.py  DVC and git through their own APIs: status, commit, push, restore
- journal.py     what a run leaves while it runs (params.yaml.journal, the run record), and the clean-up
- lock.py        one run of a project at a time
- scratch.py     a command's temporary files, and what a killed one left of them
- tracking.py    MLflow: the tracking store, one run per pipeline run, one-line server errors
- summary.py     markdown summaries of a run for Prefect artifacts
- timing.py      where a run's seconds went
"""
