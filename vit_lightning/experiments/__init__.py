"""Experiments: many runs over seeds and variants (`multirun`); the table that compares them is still to come."""
