"""Alternatives measured in the same run as the service: small ASGI apps, each under uvicorn, own process.

- `seed_style`: how the service started out — a plain `StreamingResponse` generator that retrieves after the
  stream has started, checks `await request.is_disconnected()` before every chunk, `json.dumps` each payload.
- `sse_starlette_app`: the same service loop on sse-starlette's `EventSourceResponse` (retrieval first).
- `raw_relay`: forwards the upstream's bytes unchanged, no retrieval, no SDK: the floor of relaying.

The first two use the service's own retrieval (`Embedder`, `VectorStore`, `Retriever`), prompt and SDK client,
so the comparison isolates how events are produced and sent.
"""
