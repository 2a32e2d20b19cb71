"""Training, export and evaluation of the annotator's mention tagger (torch; not served)."""
