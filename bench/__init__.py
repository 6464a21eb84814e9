"""``python -m bench.run``: the throughput, latency, memory and state benchmark of issue 7.

Three stages on the embedded tansu broker, side by side: a raw aiokafka passthrough (the Python
ceiling), a bare Faust passthrough (Faust's floor) and the full convstream worker. Results are
printed and written to ``docs/experiments/runs/``.
"""
