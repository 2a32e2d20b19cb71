"""lmrc/local"""
