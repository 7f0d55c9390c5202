"""Offline evaluation: metrics, runs and reports."""
