"""The sink: relation sets (one per document) into a graph store, idempotently and with provenance."""
