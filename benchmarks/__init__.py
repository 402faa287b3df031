"""Benchmarks for hmt: the quality benchmark (``quality.py``) and the models and peers it needs.

Nothing here is imported by :mod:`hmt_cli`; the package exists so that ``benchmarks.cifar_resnet:resnet56``
is an importable factory for ``hmt --src`` and so the tests can run the benchmark in-process.
"""
