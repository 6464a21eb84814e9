"""convstream: streaming conversion attribution and confidence-weighted labels on Kafka."""

__version__ = "0.1.0"
