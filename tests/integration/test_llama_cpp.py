"""Exported GGUF files run in llama.cpp itself (llama-cpp-python), not only in transformers'
forgiving loader: a tiny LLaMA with a real BPE tokenizer goes through `entrenar inspect convert
--to gguf --quantize q8_0|q4_0` (and f32, the sharpest check of the layout), llama.cpp loads it and evaluates a token list, and its logits
must match the source model's (transformers, fp32).

Error measure: relative RMS of the logits, ||llama.cpp - source|| / ||source||, over every
position of one sequence. TOLERANCE is set from measurement (see the constant); a model
exported with unrelated weights must land far above it, so the check can fail.

llama-cpp-python ships only an sdist; `make test` builds it once per venv (the `llama` extra).
Without it the test skips locally and fails under CI=true.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import train_tiny_tokenizer
from entrenar_tui.cli.main import app

runner = CliRunner()
INSTALL_HINT = (
    "llama-cpp-python is not installed: run `make install-llama`, or "
    "CMAKE_ARGS=\"-DGGML_NATIVE=OFF\" .venv/bin/pip install -c constraints.txt -e '.[llama]'"
)
# Relative RMS of llama.cpp's logits against the fp32 source, measured here (47 tokens, weights
# of std 0.1): f32 0.00053 (llama.cpp keeps its KV cache in f16), q8_0 0.027 (it also quantizes
# activations to 8 bits; transformers reading the same file: 0.022), q4_0 0.36 (transformers:
# 0.36); an unrelated model's export: 1.42 for every type. Tolerances are 2-4x the measurement,
# q4_0's 1.4x (its error is mostly the 4-bit weights themselves), all far below 1.42.
TOLERANCE = {"f32": 0.002, "q8_0": 0.06, "q4_0": 0.5}
# share of positions whose source argmax is in llama.cpp's top 5; measured 1.0, 1.0 and 0.89
TOP5_AGREEMENT = {"f32": 1.0, "q8_0": 0.95, "q4_0": 0.8}
UNRELATED_MIN = 1.0
TEXT = "the quick brown fox jumps over the lazy dog while the models are trained"


@pytest.fixture(scope="module")
def llama_cpp():
    try:
        import llama_cpp
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail(INSTALL_HINT, pytrace=False)
        pytest.skip(INSTALL_HINT)
    return llama_cpp


def build_llama(folder, seed: int):
    """A 2-layer LLaMA (GQA, untied head, weights of std 0.1 so the q/k rotary permutation
    matters) saved with a real byte-level BPE tokenizer trained on the built-in corpus."""
    import torch
    import transformers

    tokenizer_dir = folder.parent / "tokenizer"
    if not tokenizer_dir.exists():
        train_tiny_tokenizer(tokenizer_dir)
    tokenizer = transformers.AutoTokenizer.from_pretrained(tokenizer_dir)
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=False,
        initializer_range=0.1,
        rms_norm_eps=1e-5,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
    )
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(config).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model, tokenizer


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """(folder, fp32 logits of TEXT, token ids) of the source model; and an unrelated one."""
    import torch

    root = tmp_path_factory.mktemp("llama-cpp")
    model, tokenizer = build_llama(root / "source", seed=0)
    ids = tokenizer(TEXT).input_ids
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].numpy()
    build_llama(root / "unrelated", seed=1)
    return root, logits, ids


def export(folder, out, quant: str):
    result = runner.invoke(
        app,
        [
            "inspect",
            "convert",
            str(folder),
            "--to",
            "gguf",
            "--quantize",
            quant,
            "--output",
            str(out),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["verified"]
    return out


def llama_cpp_logits(llama_cpp, path, ids: list[int]) -> np.ndarray:
    """Logits of every position, from llama.cpp's own loader and CPU kernels."""
    llm = llama_cpp.Llama(
        model_path=str(path), logits_all=True, n_ctx=256, n_batch=256, n_threads=2, verbose=False
    )
    try:
        llm.eval(ids)
        return np.array(llm.scores[: len(ids)], dtype=np.float64)
    finally:
        llm.close()


def relative_rms(ours: np.ndarray, reference: np.ndarray) -> float:
    return float(np.linalg.norm(ours - reference) / np.linalg.norm(reference))


@pytest.mark.slow
@pytest.mark.parametrize("quant", ["f32", "q8_0", "q4_0"])
def test_exported_gguf_runs_in_llama_cpp_with_the_source_logits(llama_cpp, source, quant):
    root, reference, ids = source
    path = export(root / "source", root / f"source-{quant}.gguf", quant)
    got = llama_cpp_logits(llama_cpp, path, ids)
    assert got.shape == reference.shape
    error = relative_rms(got, reference)
    assert error < TOLERANCE[quant], error
    top5 = np.argsort(got, axis=-1)[:, -5:]
    in_top5 = float(np.mean([reference[i].argmax() in top5[i] for i in range(len(ids))]))
    assert in_top5 >= TOP5_AGREEMENT[quant], in_top5
    # the measure separates: another model's export is nowhere near these logits
    other = export(root / "unrelated", root / f"unrelated-{quant}.gguf", quant)
    assert relative_rms(llama_cpp_logits(llama_cpp, other, ids), reference) > UNRELATED_MIN


@pytest.mark.slow
def test_llama_cpp_reads_the_exported_tokenizer(llama_cpp, source):
    """llama.cpp rebuilds the BPE tokenizer from the GGUF's metadata: same ids as the source."""
    root, _, ids = source
    path = root / "source-q8_0.gguf"
    if not path.exists():
        export(root / "source", path, "q8_0")
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=256, verbose=False, vocab_only=True)
    try:
        assert llm.tokenize(TEXT.encode(), add_bos=False, special=False) == ids
        assert llm.detokenize(ids).decode() == TEXT
    finally:
        llm.close()
