"""Hyperparameter search: kdcli's Optuna sweeper for Hydra (`kd train -m hydra/sweeper=optuna`).

space.py: the search space as Optuna distributions; study.py: the study, its storage, name and
directory, and resuming a killed search; sweep.py: the sweeper's loop (ask, launch, tell);
job.py: a trial's side (its objective, pruning); record.py: search.json. Optuna is imported
inside these modules, which only a search imports.
"""
