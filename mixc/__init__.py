"""mixc: a data-mix compiler and tokenized shard builder for LLM pretraining."""

__version__ = "0.1.0"
