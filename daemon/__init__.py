"""adaptd: an online adaptive learning daemon.

Records stream in from a source, each is predicted, labelled ones are learned from, drift in
the loss closes a task, and a meta-learned initialization and per-parameter step sizes make the
next task adapt fast. See ``runner.py`` for the path a record takes.
"""

__version__ = "0.1.0"
