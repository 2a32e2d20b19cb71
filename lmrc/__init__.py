"""LMRC: document-level relation extraction on a Kafka stream (arXiv 2408.13889)."""

__version__ = "0.1.0"
