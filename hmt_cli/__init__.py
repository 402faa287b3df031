# 0.4: `block-initscale-auto` is the default (0.1: `paper`, then `centre`; 0.2: `block`; 0.3: `block-initscale`)
__version__ = "0.4.0"
