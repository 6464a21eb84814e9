"""Research tools: the truth-trained oracle and the figures that split the match model's errors.

They read the truth file, so they never run in a worker; the benchmark is in ``bench/``.
"""
