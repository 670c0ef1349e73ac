"""The knowledge base on disk: reading documents, cutting them into chunks, syncing the store (ingestion)."""
