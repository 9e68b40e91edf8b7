"""`distill init`: a commented starter config that validates as written."""

from __future__ import annotations

from pathlib import Path

from ..errors import InvalidInputError
from ..fsutil import write_text_atomic

TEMPLATE = """\
# entrenar distillation config. Validate with: entrenar distill validate --config {name}
# Every key is optional except teacher and student; override any with --set key.path=value.
seed: 42
device: auto                  # auto | cpu | cuda

teacher:
  model_id: {teacher}         # path, hub id (org/name) or packaged name (smollm2-135m)

student:
  # Either a model with the teacher's tokenizer...
  # model_id: org/small-model
  # ...or a shallower copy of the teacher (as DistilBERT did): which teacher layers to keep,
  # or {{count: N, select: auto}} to have them chosen by measurement when the run starts.{chosen}
  init_from_teacher:
    layers: {layers}
  lora:
    enabled: false            # train low-rank adapters instead of all student weights
    rank: 16
    alpha: 32
    target_modules: [q_proj, k_proj, v_proj, o_proj]
    dropout: 0.05

distillation:
  temperature: 2.0            # softens both distributions; the KD term is scaled by T^2
  alpha: 0.7                  # total = alpha*KD + (1-alpha)*CE + hidden + attention terms
  divergence: forward_kl      # forward_kl | reverse_kl | jsd
  progressive:                # hidden-state matching (FitNets / Patient KD)
    enabled: false
    layer_mapping: []         # [[student_layer, teacher_layer], ...]
    weight: 0.3
    loss: mse                 # mse | cosine
  attention:                  # attention-map transfer (MiniLM)
    enabled: false
    weight: 0.1
    loss: kl                  # kl | mse
  teacher_cache:              # skip the teacher's forward after the first epoch
    enabled: false
    kind: hidden              # hidden: exact, hidden_size x 2-4 bytes per training token;
                              # topk: top_k logits + a tail, 6 x top_k + 4 bytes (lossy)
    top_k: 64

training:
  epochs: 1
  max_steps: 200              # wins over epochs when set
  batch_size: 4
  learning_rate: 3.0e-4
  scheduler: cosine           # cosine | linear | constant
  warmup_steps: 10
  gradient_accumulation: 1
  max_grad_norm: 1.0
  mixed_precision: "no"       # no | fp16 | bf16
  gradient_checkpointing: false
  log_every: 10
  eval_every: 50

dataset:
  source: builtin             # builtin (Python docstrings, offline) | text | jsonl | huggingface
  max_length: 128
  eval_fraction: 0.05

output:
  dir: runs/distill
  checkpoint_every: 100
  keep_checkpoints: 2
  format: safetensors
"""


def starter_config(
    teacher: str, layers: list[int] | None = None, name: str = "distill.yaml", chosen: str = ""
) -> str:
    note = f"\n  # {chosen}" if chosen else ""
    return TEMPLATE.format(teacher=teacher, layers=layers or [0, 3, 6, 9], name=name, chosen=note)


def write_starter(
    output: str | Path, teacher: str, force: bool = False, student_layers: int | None = None
) -> tuple[Path, object]:
    """Write the starter config: the student keeps every third teacher layer, or with
    `student_layers` N the N layers chosen by measurement (layers.py). Returns the path and the
    choice (None without `student_layers`)."""
    output = Path(output)
    if output.exists() and not force:
        raise InvalidInputError(
            f"{output} already exists", "choose another --output or pass --force"
        )
    layers, choice = None, None
    if student_layers is not None:
        choice = _choose(teacher, student_layers)
        layers = choice.layers
    else:
        try:
            from ..models import Model

            teacher_layers = Model.open(teacher).arch.layers
            layers = list(range(0, teacher_layers, 3)) if teacher_layers else None
        except Exception:  # an unresolvable teacher still gets a template to edit
            layers = None
    chosen = choice.summary() if choice else ""
    write_text_atomic(output, starter_config(teacher, layers, output.name, chosen))
    return output, choice


def _choose(teacher: str, count: int):
    from .config import config_from_data
    from .layers import choose_for_config

    config = config_from_data(
        {"teacher": {"model_id": teacher}, "student": {"init_from_teacher": {"count": count}}}
    )
    return choose_for_config(config, count, "auto")
