"""lmrc/proposer/training"""
