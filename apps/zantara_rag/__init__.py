"""Zantara RAG: Bali Zero's streaming retrieval-augmented chat backend."""

__version__ = "0.1.0"
