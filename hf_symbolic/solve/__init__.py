"""Numerical pieces that need numpy only: conjugate gradient, damping, line search, preconditioners."""
