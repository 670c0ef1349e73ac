"""Finding passages: the embedder, the vector store, and the search that turns a question into sources."""
