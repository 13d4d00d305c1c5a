"""Expected sentence embeddings of models/default (all-MiniLM-L6-v2) from sentence-transformers.

Run from the repo root: .venv-fixtures/bin/python Tests/Fixtures/make_embedding_fixture.py
Writes Tests/Fixtures/embeddings/expected.json: {"model", "versions", "sentences", "embeddings"}.
"""
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import sentence_transformers
import torch
from sentence_transformers import SentenceTransformer

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "I didn't understand how to solve the quadratic equation, can you explain it again?",
    "Café crème brûlée — naïve résumé façade.",
    "数学の宿題が難しいです。",
    "I love this class!!! 😀😀",
    "short",
    "Photosynthesis converts light energy into chemical energy stored in glucose. " * 20,
]

model = SentenceTransformer("models/default", device="cpu")
with torch.no_grad():
    vectors = model.encode(SENTENCES, convert_to_numpy=True, batch_size=4)
out = {
    "model": "all-MiniLM-L6-v2 (models/default)",
    "versions": {"sentence_transformers": sentence_transformers.__version__, "torch": torch.__version__},
    "max_seq_length": model.max_seq_length,
    "sentences": SENTENCES,
    "embeddings": [[float(x) for x in v] for v in vectors],
}
os.makedirs("Tests/Fixtures/embeddings", exist_ok=True)
with open("Tests/Fixtures/embeddings/expected.json", "w", encoding="utf-8") as f:
    json.dump(out, f, ensure_ascii=False)
print(vectors.shape, model.max_seq_length)
