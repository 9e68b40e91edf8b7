"""Which teacher layers a student cut from the teacher keeps, chosen by measurement.

The choice moves the student's starting point by orders of magnitude (SmolLM2-135M, 10 of 30
layers: every third 3.4M held-out ppl, keeping the last one 160k; 20 layers with a middle block
dropped: 669), as ShortGPT (Men et al. 2024) and Minitron (Muralidharan et al. 2024) report for
depth pruning. Two criteria, both on a few calibration blocks of the run's own data:

- block influence (ShortGPT): 1 - cos(block input, block output) per token, averaged; keep the
  `count` most influential blocks. One teacher forward.
- greedy removal: repeatedly drop the block whose removal raises the calibration loss least.
  One forward per remaining block per removal; exact for what it measures.

`auto` runs both and keeps the one with the lower loss on separate held-out blocks, and says so.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

CALIBRATION_BLOCKS = 8  # blocks each criterion scores (selection), and as many held out


@dataclass
class LayerChoice:
    layers: list[int]
    method: str  # block_influence | greedy
    heldout_loss: float
    candidates: dict[str, dict] = field(default_factory=dict)  # method -> layers, held-out loss

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        parts = [
            f"{name} {c['layers']} (held-out ppl {math.exp(min(c['heldout_loss'], 50)):,.0f})"
            for name, c in self.candidates.items()
        ]
        return f"kept teacher layers {self.layers} by {self.method}; compared: " + "; ".join(parts)


def _blocks(model):
    from .modeling import _layer_list

    path, blocks = _layer_list(model)
    parent = model
    for part in path.split(".")[:-1]:
        parent = getattr(parent, part)
    return parent, path.split(".")[-1], blocks


class _Kept:
    """The teacher with only some blocks in its layer list, for as long as the context lasts."""

    def __init__(self, model, layers: list[int]) -> None:
        self.parent, self.name, self.blocks = _blocks(model)
        self.layers, self.model = layers, model

    def __enter__(self):
        import torch

        setattr(self.parent, self.name, torch.nn.ModuleList([self.blocks[i] for i in self.layers]))
        self.layer_types = getattr(self.model.config, "layer_types", None)
        if self.layer_types:
            self.model.config.layer_types = [self.layer_types[i] for i in self.layers]
        return self.model

    def __exit__(self, *exc) -> None:
        setattr(self.parent, self.name, self.blocks)
        if self.layer_types:
            self.model.config.layer_types = self.layer_types


def mean_loss(model, batch, layers: list[int] | None = None) -> float:
    """Next-token cross-entropy of the teacher keeping `layers` (all when None)."""
    import torch

    if layers is None:
        with torch.inference_mode():
            return float(model(input_ids=batch, labels=batch).loss)
    with _Kept(model, layers) as kept, torch.inference_mode():
        return float(kept(input_ids=batch, labels=batch).loss)


def block_influence(model, batch) -> list[float]:
    """ShortGPT's block influence of each block: 1 - mean cosine(input, output) per token."""
    import torch

    with torch.inference_mode():
        hidden = model(input_ids=batch, output_hidden_states=True).hidden_states
    scores = []
    for before, after in zip(hidden[:-1], hidden[1:], strict=True):
        cosine = torch.nn.functional.cosine_similarity(before.float(), after.float(), dim=-1)
        scores.append(float(1 - cosine.mean()))
    return scores


def by_block_influence(model, batch, count: int) -> list[int]:
    scores = block_influence(model, batch)
    ranked = sorted(range(len(scores)), key=lambda i: scores[i], reverse=True)
    return sorted(ranked[:count])


def by_greedy_removal(model, batch, count: int) -> list[int]:
    """About L^2/2 forwards of the calibration blocks (SmolLM2, 30 -> 15 layers: 345; 14 minutes
    on 2 busy cores). Searching on half the blocks took 4.8 minutes but overfitted them: held-out
    loss 6.593 against 6.175 with all 8 (block influence: 6.467), so all 8 are used."""
    kept = list(range(len(_blocks(model)[2])))
    while len(kept) > count:
        losses = {i: mean_loss(model, batch, [k for k in kept if k != i]) for i in kept}
        kept.remove(min(losses, key=losses.get))
    return kept


CRITERIA = {"block_influence": by_block_influence, "greedy": by_greedy_removal}


def choose_layers(model, selection, heldout, count: int, select: str = "auto") -> LayerChoice:
    """The `count` blocks to keep, by `select` (block_influence, greedy or auto: both, and the
    one with the lower held-out loss wins). `selection` and `heldout` are token-id batches."""
    from ..errors import InvalidInputError

    total = len(_blocks(model)[2])
    if not 1 <= count <= total:
        raise InvalidInputError(
            f"a student of {count} layers cannot be cut from a {total}-layer teacher",
            f"choose a count from 1 to {total}",
        )
    names = list(CRITERIA) if select == "auto" else [select]
    candidates = {}
    for name in names:
        layers = CRITERIA[name](model, selection, count)
        candidates[name] = {"layers": layers, "heldout_loss": mean_loss(model, heldout, layers)}
    best = min(candidates, key=lambda name: candidates[name]["heldout_loss"])
    return LayerChoice(
        candidates[best]["layers"], best, candidates[best]["heldout_loss"], candidates
    )


def choose_for_config(config, count: int, select: str = "auto") -> LayerChoice:
    """Load the config's teacher and data and choose: what `distill init --student-layers` and
    a run with `init_from_teacher: {count: N}` call."""
    import torch

    from .data import build_dataset, load_documents
    from .modeling import load_causal_lm, load_tokenizer, pick_device

    teacher_config, dataset = config.teacher, config.dataset
    device = pick_device(config.device)
    tokenizer = load_tokenizer(
        teacher_config.model_id, teacher_config.revision, teacher_config.format
    )
    model = load_causal_lm(
        teacher_config.model_id,
        device,
        revision=teacher_config.revision,
        fmt=teacher_config.format,
        precision=teacher_config.precision,
    ).eval()
    docs = load_documents(
        dataset.source,
        dataset.path,
        dataset.name,
        dataset.split,
        dataset.text_field,
        dataset.streaming,
        dataset.max_documents,
    )
    data = build_dataset(docs, tokenizer, dataset.max_length, dataset.eval_fraction)
    pool = data.train + data.eval
    if len(pool) < 2 * CALIBRATION_BLOCKS:
        from ..errors import InvalidInputError

        raise InvalidInputError(
            f"the dataset has {len(pool)} blocks; choosing layers needs {2 * CALIBRATION_BLOCKS}",
            "add text, or lower dataset.max_length",
        )
    selection = torch.tensor(data.train[:CALIBRATION_BLOCKS], device=device)
    heldout_blocks = data.eval[:CALIBRATION_BLOCKS]
    if len(heldout_blocks) < CALIBRATION_BLOCKS:
        heldout_blocks = data.train[-CALIBRATION_BLOCKS:]
    heldout = torch.tensor(heldout_blocks, device=device)
    return choose_layers(model, selection, heldout, count, select)
