"""Hyperparameter sweeps: ``charrnn sweep`` and :func:`charrnn_ext.sweep`.

Optuna chooses each trial's options, Dask runs the trials, and every trial is
an ordinary ``charrnn train`` run folder. The modules, in the order a sweep
uses them:

- :mod:`.space`: the search space (a TOML table of option ranges), checked
  against the option table of :mod:`charrnn_ext.config`;
- :mod:`.settings`: the sweep's own settings (trials, sampler, pruner, workers);
- :mod:`.study`: the Optuna study, its sampler and pruner, and its journal;
- :mod:`.cluster`: the Dask cluster (an embedded local one or a scheduler's address);
- :mod:`.trial`: one trial as it runs on a worker (train, report, prune);
- :mod:`.results`: the results table and the summary files of the output folder;
- :mod:`.run`: the client loop that ties them together (:func:`.run.sweep`).

Importing this package imports neither Optuna nor Dask; :mod:`.study`,
:mod:`.cluster` and :mod:`.trial` do, and are imported when a sweep starts.
"""
