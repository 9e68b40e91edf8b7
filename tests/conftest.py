"""Shared fixtures: tiny real transformers models of every architecture entrenar detects.

Models are built from configs (random weights, fixed seed) and saved once per session.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Small but not degenerate: several layers, GQA where the family has it, untied heads where usual.
TINY_CONFIGS: dict[str, dict] = {
    "llama": dict(
        model_type="llama",
        vocab_size=256,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        tie_word_embeddings=False,
    ),
    "mistral": dict(
        model_type="mistral",
        vocab_size=256,
        hidden_size=64,
        intermediate_size=160,
        num_hidden_layers=2,
        num_attention_heads=8,
        num_key_value_heads=2,
        max_position_embeddings=128,
    ),
    "qwen2": dict(
        model_type="qwen2",
        vocab_size=256,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        tie_word_embeddings=True,
    ),
    "gpt2": dict(
        model_type="gpt2", vocab_size=256, n_embd=64, n_layer=3, n_head=4, n_positions=128
    ),
    "gpt_neox": dict(
        model_type="gpt_neox",
        vocab_size=256,
        hidden_size=64,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=128,
    ),
    "bert": dict(
        model_type="bert",
        vocab_size=256,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=128,
    ),
    "roberta": dict(
        model_type="roberta",
        vocab_size=256,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=130,
    ),
    "t5": dict(
        model_type="t5",
        vocab_size=256,
        d_model=64,
        d_kv=16,
        d_ff=128,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=4,
    ),
}

# The class a user of each family would load (causal LM, masked LM, seq2seq).
MODEL_CLASSES = {
    "llama": "AutoModelForCausalLM",
    "mistral": "AutoModelForCausalLM",
    "qwen2": "AutoModelForCausalLM",
    "gpt2": "AutoModelForCausalLM",
    "gpt_neox": "AutoModelForCausalLM",
    "bert": "AutoModelForMaskedLM",
    "roberta": "AutoModelForMaskedLM",
    "t5": "AutoModelForSeq2SeqLM",
}

ARCHES = list(TINY_CONFIGS)


def build_tiny_model(arch: str, seed: int = 0):
    import torch
    import transformers

    params = dict(TINY_CONFIGS[arch])
    model_type = params.pop("model_type")
    config = transformers.AutoConfig.for_model(model_type, **params)
    torch.manual_seed(seed)
    cls = getattr(transformers, MODEL_CLASSES[arch])
    model = cls.from_config(config)
    model.eval()
    return model


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """Factory: tiny_model_dir("llama") -> folder with config.json and model.safetensors."""
    cache: dict[str, Path] = {}

    def make(arch: str) -> Path:
        if arch not in cache:
            folder = tmp_path_factory.mktemp(f"tiny-{arch}")
            build_tiny_model(arch).save_pretrained(folder, safe_serialization=True)
            cache[arch] = folder
        return cache[arch]

    return make


def train_tiny_tokenizer(folder: Path, vocab_size: int = 384) -> Path:
    """A real byte-level BPE tokenizer trained on a slice of the built-in corpus (a second)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from entrenar_tui.core.distill.data import builtin_corpus

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(builtin_corpus(300), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        bos_token="<|endoftext|>",
    )
    fast.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_lm_pair(tmp_path_factory):
    """(teacher_dir, student_dir): tiny LLaMA causal LMs sharing a trained tokenizer."""
    import torch
    import transformers

    root = tmp_path_factory.mktemp("lm-pair")
    tok_dir = train_tiny_tokenizer(root / "tok")
    vocab = len(transformers.AutoTokenizer.from_pretrained(tok_dir))
    out = []
    for name, layers, hidden in (("teacher", 4, 64), ("student", 2, 32)):
        cfg = transformers.LlamaConfig(
            vocab_size=vocab,
            hidden_size=hidden,
            intermediate_size=hidden * 2,
            num_hidden_layers=layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=256,
            tie_word_embeddings=False,
            eos_token_id=0,
            bos_token_id=0,
            pad_token_id=0,
        )
        torch.manual_seed(1)
        model = transformers.LlamaForCausalLM(cfg)
        folder = root / name
        model.save_pretrained(folder)
        transformers.AutoTokenizer.from_pretrained(tok_dir).save_pretrained(folder)
        out.append(folder)
    return tuple(out)


@pytest.fixture
def anyio_backend():
    """The app's Pilot tests run on asyncio (anyio's pytest plugin)."""
    return "asyncio"


@pytest.fixture
def tui_env(tmp_path, monkeypatch):
    """The app runs in an empty folder with its own HF cache and ENTRENAR_HOME, so what it lists
    (and what a snapshot shows) depends on nothing outside the test."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("ENTRENAR_HOME", str(tmp_path / ".entrenar"))
    return tmp_path


def write_config(path, teacher, student, *, dataset=None, output=None, **training):
    """A tiny distill config (teacher and student from `tiny_lm_pair`); `training` overrides
    training fields, `dataset` and `output` update those sections."""
    import yaml

    cfg = {
        "seed": 3,
        "device": "cpu",
        "teacher": {"model_id": str(teacher)},
        "student": {"model_id": str(student)},
        "distillation": {"temperature": 2.0, "alpha": 0.5},
        "training": {
            "max_steps": 12,
            "batch_size": 2,
            "learning_rate": 3e-3,
            "warmup_steps": 2,
            "log_every": 1,
            "eval_every": 6,
            "eval_max_blocks": 4,
            **training,
        },
        "dataset": {"source": "builtin", "max_length": 32, "max_documents": 120, **(dataset or {})},
        "output": {"checkpoint_every": 4, "keep_checkpoints": 2, **(output or {})},
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def write_recorded_sweep(root, name: str = "temperature-20261201-120000"):
    """A finished temperature sweep (2 settings x 3 seeds) written with the sweep directory's
    own writers, with fixed metrics and loss curves: T=4 is clearly better than T=1."""
    from entrenar_tui.core.bench.spec import SweepSpec
    from entrenar_tui.core.bench.sweepdir import SweepDir

    base = {"seed": 0, "teacher": {"model_id": "t"}, "student": {"model_id": "s"}}
    variants = [(f"T={t}", {"distillation.temperature": float(t)}) for t in (1, 4)]
    spec = SweepSpec("temperature", base, variants, [0, 1, 2], baseline="T=1")
    sweep = SweepDir(root / "runs" / "sweeps" / name)
    sweep.write_spec(spec)
    for index, job in enumerate(spec.jobs()):
        ppl = (40.0 if job.label == "T=1" else 30.0) + 0.5 * (index % 3)
        metrics = {
            "final_loss": 3.0,
            "eval_loss": math.log(ppl),
            "eval_ppl": ppl,
            "eval_top1_agreement": 0.4 if job.label == "T=1" else 0.5,
            "tokens_per_s": 1000.0 + index,
            "peak_memory_bytes": 2**30,
            "wall_s": 60.0,
            "steps": 30,
        }
        curve = [
            {"kind": "train", "step": step, "loss_ce": math.log(ppl) + 3.0 / step}
            for step in range(1, 31)
        ]
        job_dir = sweep.job_dir(job)
        job_dir.mkdir(parents=True)
        (job_dir / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in curve))
        sweep.append_result(
            {
                "key": job.key,
                "label": job.label,
                "overlay": job.overlay,
                "seed": job.seed,
                "status": "finished",
                "attempts": 1,
                "error": None,
                "metrics": metrics,
            }
        )
    return sweep.path
