"""Peer methods the quality benchmark compares hmt against (optional ``peers`` extra, never an hmt dependency)."""
