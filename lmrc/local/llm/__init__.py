"""The local LLM: base model, grammar-constrained generation, a server speaking TGI's HTTP API."""
