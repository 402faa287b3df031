"""Peers the quality benchmark compares hmt with (optional ``peers`` extra, never an hmt dependency)."""
