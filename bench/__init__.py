"""Benchmarks for Zantara RAG: `python -m bench [--quick]` (docs/performance.md); `python -m bench.<name>`."""
