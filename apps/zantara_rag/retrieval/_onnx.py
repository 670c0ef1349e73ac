"""Exporting a sentence-transformers model to one ONNX file that outputs the final, normalised embedding.

Only the common layout is supported: a Hugging Face transformer, mean pooling, L2 normalisation (what
all-MiniLM-L6-v2 is). The export needs torch, transformers and onnx; it runs once per model, writes the
file atomically into the cache directory and is refused unless ONNX Runtime reproduces the
sentence-transformers embeddings of `PROBES` within `TOLERANCE` cosine — retrieval must not change.

`quantize` derives from that file the questions' model: the same graph with its weights in 8-bit integers
(ONNX Runtime's dynamic quantization, per channel), a quarter of the bytes to read per question. Its vectors
are within `QUANTIZED_TOLERANCE` cosine of the full-precision ones (checked on `PROBES`); the passages keep
full precision. Why, and what it changes in retrieval: docs/retrieval.md, "Latency".
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

EXPORT_VERSION = 2
TOLERANCE = 1e-4
# A guard against a broken quantization, not the measure of its quality (that is the retrieval benchmark's).
# Measured for all-MiniLM-L6-v2: 0.979-0.994 on PROBES, 0.986-0.998 on the 324 labelled questions, 0.963 on
# the text "?".
QUANTIZED_TOLERANCE = 0.05
_LAYOUT = [
    "sentence_transformers.models.Transformer",
    "sentence_transformers.models.Pooling",
    "sentence_transformers.models.Normalize",
]
# Short, long (truncated at max_seq_length), non-ASCII, in one padded batch: every path the tokenizer takes.
PROBES = [
    "How do I get a work KITAS?",
    "x",
    "Pajak penghasilan orang pribadi untuk WNA yang tinggal di Bali lebih dari 183 hari. " * 40,
    "Visa d'investisseur — Überweisung, 印度尼西亚 签证, ½ price.",
]


class ExportRefused(Exception):
    """The model's layout is not supported, or the exported file does not reproduce its embeddings."""


def layout(model_dir: Path) -> dict[str, Any] | None:
    """`max_seq_length` and the input names for a supported local model directory, else None."""
    try:
        modules = json.loads((model_dir / "modules.json").read_text())
        pooling = json.loads((model_dir / "1_Pooling" / "config.json").read_text())
        st_config = json.loads((model_dir / "sentence_bert_config.json").read_text())
    except (OSError, ValueError):
        return None
    types = [m.get("type") for m in modules]
    mean_only = pooling.get("pooling_mode_mean_tokens") and not any(
        v for k, v in pooling.items() if k.startswith("pooling_mode_") and k != "pooling_mode_mean_tokens"
    )
    if types != _LAYOUT or not mean_only or not (model_dir / "tokenizer.json").is_file():
        return None
    return {"max_seq_length": int(st_config.get("max_seq_length") or 512)}


def cache_key(model_dir: Path) -> str:
    """Changes with the weights file or the export code (size and mtime: hashing 90 MB would cost a start)."""
    weights = next(
        (model_dir / n for n in ("model.safetensors", "pytorch_model.bin") if (model_dir / n).is_file()), None
    )
    size, mtime = (weights.stat().st_size, weights.stat().st_mtime_ns) if weights is not None else (0, 0)
    raw = f"{model_dir.resolve()}|{size}|{mtime}|{EXPORT_VERSION}"
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def feeds(encodings: Sequence[Any], names: Sequence[str]) -> dict[str, Any]:
    """The model's inputs, by input name, for tokenizer encodings of one length (a padded batch, or one
    text)."""
    import numpy as np

    columns = {
        "input_ids": [e.ids for e in encodings],
        "attention_mask": [e.attention_mask for e in encodings],
        "token_type_ids": [e.type_ids for e in encodings],
    }
    return {name: np.array(columns[name], dtype=np.int64) for name in names}


@contextmanager
def _written_atomically(target: Path) -> Iterator[Path]:
    """A temporary file beside `target` to write; moved onto it (readable by all) if the block ends without an
    error, removed otherwise: a reader never sees a half-written or refused model."""
    fd, name = tempfile.mkstemp(prefix=target.name, suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        tmp.chmod(0o644)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def export(model_dir: Path, target: Path) -> None:
    """Export, verify against sentence-transformers, then move into place atomically."""
    import numpy as np
    import onnxruntime as ort
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as transformers_logging

    # transformers draws a "Loading weights" progress bar on stderr: not a log line, and not JSON.
    transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    reference = SentenceTransformer(str(model_dir), device="cpu")
    transformer: Any = reference[0].auto_model
    transformer.eval()
    # Plain attention ops rather than the SDPA kernel call: ONNX Runtime runs that graph ~15% faster on
    # ingestion batches (and no slower on queries); the probe check below guards the equality.
    transformer.set_attn_implementation("eager")
    tokenizer = reference.tokenizer

    class Embedding(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.transformer = transformer

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            out = self.transformer(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(out.dtype)
            mean = (out * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, p=2, dim=1)

    sample = tokenizer(["a b", "c d e f"], padding=True, return_tensors="pt")
    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes = {n: {0: "batch", 1: "tokens"} for n in names} | {"embedding": {0: "batch"}}
    target.parent.mkdir(parents=True, exist_ok=True)
    with _written_atomically(target) as tmp:
        with torch.no_grad(), warnings.catch_warnings():
            # The tracer warns about shape checks it freezes; the probe comparison below is the real check.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                Embedding(),
                tuple(sample[n] for n in names),
                str(tmp),
                input_names=names,
                output_names=["embedding"],
                dynamic_axes=axes,
                opset_version=17,
                dynamo=False,
                external_data=False,
            )
        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        encoded = tokenizer(
            PROBES, padding=True, truncation=True, max_length=reference.max_seq_length, return_tensors="np"
        )
        got = session.run(None, {n: encoded[n].astype(np.int64) for n in names})[0]
        want = reference.encode(
            PROBES, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
        worst = float(np.min(np.sum(got * want, axis=1)))
        if worst < 1 - TOLERANCE:
            raise ExportRefused(
                f"the ONNX export of {model_dir} reproduces its embeddings only to cosine {worst:.6f}"
            )
    log.info("exported %s to %s", model_dir, target)


def _not_the_quantizer(record: logging.LogRecord) -> bool:
    return "onnxruntime/quantization" not in record.pathname.replace("\\", "/")


def quantize(source: Path, target: Path, tokenizer_file: Path, max_seq_length: int) -> None:
    """The 8-bit questions' model of the exported `source`, verified on `PROBES`, moved into place
    atomically."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from tokenizers import Tokenizer

    with _written_atomically(target) as tmp:
        # It logs on the root logger: a warning with advice for static quantization's calibration (dynamic
        # quantization has none) and a line for every tensor it leaves alone, some sixty. The check below
        # says whether the result is good; this module logs the outcome.
        root = logging.getLogger()
        root.addFilter(_not_the_quantizer)
        try:
            # The model itself, not its path: given a path it writes a fixed-name file beside the source for
            # its shape inference (two processes quantizing at once would share it); given the model, its own
            # temporary directory.
            quantize_dynamic(onnx.load(str(source)), tmp, weight_type=QuantType.QInt8, per_channel=True)
        finally:
            root.removeFilter(_not_the_quantizer)
        tokenizer = Tokenizer.from_file(str(tokenizer_file))
        tokenizer.enable_truncation(max_length=max_seq_length)
        full = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"])
        small = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        names = [i.name for i in full.get_inputs()]
        worst = 1.0
        for probe in PROBES:  # one at a time: no padding, as questions are embedded
            inputs = feeds([tokenizer.encode(probe)], names)
            worst = min(worst, float(np.sum(full.run(None, inputs)[0] * small.run(None, inputs)[0])))
        if worst < 1 - QUANTIZED_TOLERANCE:
            raise ExportRefused(
                f"the 8-bit model of {source} reproduces its embeddings only to cosine {worst:.4f}"
            )
    log.info("quantized %s to %s", source, target)
