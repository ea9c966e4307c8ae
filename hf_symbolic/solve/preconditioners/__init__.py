"""Preconditioners for CG behind one protocol, with one registration table."""
