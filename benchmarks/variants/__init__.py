"""Experimental strategies for the quality benchmark, never registered in ``hmt`` itself.

``python benchmarks/quality.py --strategy-module benchmarks.variants.surplus --inits scratch,centre,surplus-closing``
imports the module, which appends its strategies to ``hmt_cli.match.STRATEGIES`` for that run (and its
shards) only. A variant that wins on the protocol moves into ``hmt_cli/match/``; one that loses stays
here, with its numbers in docs/quality.md, so nobody measures it twice.
"""
