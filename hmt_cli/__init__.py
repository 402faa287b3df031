__version__ = "0.3.0"  # 0.3: `block-initscale` is the default strategy (0.1: `paper`, then `centre`; 0.2: `block`)
