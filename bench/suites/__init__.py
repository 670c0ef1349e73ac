"""One module per figure family: `run(bench) -> dict`, and a `__main__` where it measures in-process."""
