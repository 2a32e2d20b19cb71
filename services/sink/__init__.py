"""The sink: RelationEvents into a graph store, idempotently and with provenance."""
