__version__ = "0.2.0"  # 0.2: `block` is the default strategy (0.1: `paper`, then `centre`)
