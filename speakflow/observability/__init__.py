"""Logs and metrics: what an operator reads when something goes wrong, and what they graph."""
