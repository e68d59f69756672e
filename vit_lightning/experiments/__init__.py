"""Experiments: many runs over seeds and variants (`multirun`), and the table that compares them (`compare`)."""
