"""The annotator stage: plain text in, entity-annotated documents out."""
