"""Hyperparameter search over whole active-learning runs with Keras Tuner (`tf_bgadl.tune`).

  search_space.py  which train flags are searched, over what; parsed and checked before training
  objectives.py    a trial's objective from its validation curve (never the test split)
  tuner.py         the Keras Tuner HyperModel (values -> train config) and Tuner (trial -> run)
  search.py        one search in a workdir: oracle, resume, distribution, best trial, test once
  report.py        tune_report.md and tune_report.png from the trials on disk
  best_flags.py    best.flags: the full train flags of the best trial

Importing this package imports neither TensorFlow nor Keras Tuner (only tuner.py and search.py
do).
"""
