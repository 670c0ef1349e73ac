"""One module per figure family; each has `run(bench) -> dict` (and, where it measures in-process, a `__main__`)."""
