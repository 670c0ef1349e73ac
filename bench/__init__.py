"""Benchmarks for Zantara RAG (`python -m bench.<name>`)."""
