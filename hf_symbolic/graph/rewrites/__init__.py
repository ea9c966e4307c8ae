"""hf_symbolic's own graph rewrites: one registration table, one on/off gate."""
