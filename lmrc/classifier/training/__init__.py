"""lmrc/classifier/training"""
