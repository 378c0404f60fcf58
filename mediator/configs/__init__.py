"""Experiment configs (see each docstring)."""
