"""The size of the float32 workspaces the logit losses work through (logit_grads.py) and that
`distill estimate` counts: torch-free, so the estimate stays so.

On a CPU three small ones stay in cache while a chunk is worked on (21 positions of a 49152
vocabulary are 4 MiB; measured on 4 x 127 x 49152 logits: 4 MiB chunks ran KD forward and
backward in 0.08 s, 24 MiB in 0.19 s, one 100 MB chunk in 0.38 s). On a GPU each chunk costs
kernel launches, so chunks are large there (512 positions of a 128k vocabulary).
"""

from __future__ import annotations

CHUNK_BYTES = {"cpu": 4 * 2**20, "cuda": 256 * 2**20}
WORKSPACES = 3


def chunk_tokens(device_type: str, vocab: int) -> int:
    """Tokens (batch x positions) per chunk on this kind of device, at least 1."""
    return max(1, CHUNK_BYTES.get(device_type, CHUNK_BYTES["cuda"]) // (4 * max(vocab, 1)))


def workspace_bytes(device_type: str, tokens: int, vocab: int) -> int:
    """What the three workspaces of one call hold: a chunk each, at most the whole batch."""
    return WORKSPACES * 4 * vocab * min(tokens, chunk_tokens(device_type, vocab))
