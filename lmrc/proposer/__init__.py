"""Relation candidate proposal (RCP): score every ordered entity pair, pass on the likely ones."""
