"""Metric maps, the evaluate report and its figures."""
