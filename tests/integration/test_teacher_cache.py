"""The teacher top-k cache: what it keeps, that KD over it follows full KD, and that a cached
epoch gives the same losses as recomputing the teacher, with no teacher forward at all."""

from __future__ import annotations

import json

import torch
import torch.nn.functional as F
import yaml

from entrenar_tui.core.distill.config import load_config
from entrenar_tui.core.distill.losses import KDLoss
from entrenar_tui.core.distill.trainer import Progress, _compress, build, micro_batch, train_step


def _lm_like_logits(vocab=2000, positions=64, seed=0):
    """Logits with a few likely tokens and a long, heavy tail, as real LMs have at T=2."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(1, positions, vocab, generator=g) * 2.0
    hot = torch.randint(0, vocab, (1, positions, 8), generator=g)
    return logits.scatter_add_(-1, hot, torch.full(hot.shape, 6.0))


def _rebuild(parts, vocab):
    values, indices, tail = parts
    return (
        tail.expand(*indices.shape[:-1], vocab).clone().scatter_(-1, indices.long(), values.float())
    )


def test_compressed_teacher_keeps_top_k_probabilities_and_the_tail_mass():
    logits, temperature = _lm_like_logits(), 2.0
    parts = _compress(logits, 32, temperature)
    rebuilt = _rebuild(parts, logits.shape[-1])
    p_full = F.softmax(logits / temperature, -1)
    p_rebuilt = F.softmax(rebuilt / temperature, -1)
    top = parts[1].long()
    # fp16 logits: relative error of exp(v / T) up to ~2^-11 * |v| / T
    torch.testing.assert_close(p_rebuilt.gather(-1, top), p_full.gather(-1, top), rtol=4e-3, atol=0)
    tail_full = 1 - p_full.gather(-1, top).sum(-1)
    tail_rebuilt = 1 - p_rebuilt.gather(-1, top).sum(-1)
    torch.testing.assert_close(tail_rebuilt, tail_full, rtol=4e-3, atol=1e-6)
    assert 0.3 < tail_full.mean() < 0.95  # the heavy tail this is about
    assert parts[0].dtype == torch.float16 and parts[1].dtype == torch.int32
    assert parts[2].shape == (1, 64, 1)


def test_kd_over_the_cache_follows_full_kd_on_smollm2_where_a_truncated_top_k_does_not():
    """The demo's real teacher and student, one batch: at T=2 SmolLM2's top 64 tokens hold
    ~20 % of the probability, so dropping the tail changes the target; the even tail does not."""
    s = build(load_config("demo", ["dataset.max_documents=50", "device=cpu"]))
    ids = torch.tensor(s.train_blocks[:2])
    with torch.no_grad():
        teacher = s.teacher(input_ids=ids).logits.float()
    student = s.student(input_ids=ids).logits.float()
    temperature, vocab = 2.0, teacher.shape[-1]
    kd = KDLoss(temperature)

    def grad(target):
        return torch.autograd.grad(kd(student, target), student, retain_graph=True)[0].flatten()

    full = grad(teacher)
    cached = grad(_rebuild(_compress(teacher, 64, temperature), vocab))
    top = teacher.topk(64, -1)
    truncated = grad(torch.full_like(teacher, float("-inf")).scatter_(-1, top.indices, top.values))
    cos = lambda a, b: F.cosine_similarity(a, b, 0).item()  # noqa: E731
    assert F.softmax(teacher / temperature, -1).gather(-1, top.indices).sum(-1).mean() < 0.5
    assert cos(cached, full) > 0.99  # 0.998 measured
    assert cos(truncated, full) < 0.9  # 0.79 measured
    assert 0.95 < (cached.norm() / full.norm()).item() < 1.05


def _config(tmp_path, teacher, student):
    cfg = {
        "seed": 1,
        "device": "cpu",
        "teacher": {"model_id": str(teacher)},
        "student": {"model_id": str(student)},
        "distillation": {
            "temperature": 2.0,
            "alpha": 0.7,
            "teacher_cache": {"enabled": True, "top_k": 16},
        },
        "training": {
            "epochs": 2,
            "batch_size": 2,
            "learning_rate": 3e-3,
            "warmup_steps": 0,
            "eval_every": None,
        },
        "dataset": {
            "source": "builtin",
            "max_length": 32,
            "max_documents": 3,
            "eval_fraction": 0.0,
        },
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return load_config(str(path))


def _train_epochs(config, epochs: int = 2, term: str = "loss", recompute: bool = False):
    """Losses (`term`) of whole epochs, the teacher forwards per epoch, the steps per epoch and
    the setup; `recompute` empties the cache before every step (the teacher runs every time)."""
    torch.manual_seed(0)
    s = build(config)
    calls = []
    s.teacher.register_forward_pre_hook(lambda module, inputs: calls.append(1))
    progress, losses, per_epoch_calls = Progress(), [], []
    per_epoch = len(s.train_blocks) // config.training.batch_size
    for _epoch in range(epochs):
        before = len(calls)
        for _ in range(per_epoch):
            if recompute:
                s.teacher_cache.clear()
            losses.append(train_step(s, progress, None)[term])
        per_epoch_calls.append(len(calls) - before)
    return losses, per_epoch_calls, per_epoch, s


def test_second_epoch_runs_from_the_cache_with_the_same_losses(tiny_lm_pair, tmp_path):
    teacher, student = tiny_lm_pair
    config = _config(tmp_path, teacher, student)

    cached, calls, per_epoch, _ = _train_epochs(config, term="loss_kd")
    recomputed, recompute_calls, _, _ = _train_epochs(config, term="loss_kd", recompute=True)
    assert per_epoch >= 3
    # the second epoch runs the teacher only for batches holding a block epoch 1 left out
    # (len(train_blocks) % batch_size blocks fall outside each epoch's whole batches)
    s = build(config)
    seen = {b for m in range(per_epoch) for b in micro_batch(s, m)[0]}
    unseen = sum(
        any(b not in seen for b in micro_batch(s, m)[0]) for m in range(per_epoch, 2 * per_epoch)
    )
    assert unseen < per_epoch / 2
    assert calls == [per_epoch, unseen]
    assert recompute_calls == [per_epoch, per_epoch]
    assert cached == recomputed  # bit for bit: both paths use the same fp16 logits and tail


def test_a_run_with_the_cache_says_how_much_of_the_teacher_it_keeps(tiny_lm_pair, tmp_path):
    from typer.testing import CliRunner

    from entrenar_tui.cli.main import app

    teacher, student = tiny_lm_pair
    config = _config(tmp_path, teacher, student)
    path = tmp_path / "run.yaml"
    path.write_text(
        yaml.safe_dump(
            config.model_dump(mode="json")
            | {"training": {**config.training.model_dump(mode="json"), "max_steps": 2}}
        )
    )
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(
        app, ["distill", "run", "--config", str(path), "--output", str(run_dir), "--json"]
    )
    assert result.exit_code == 0, result.output
    notes = [
        e["message"] for e in map(json.loads, result.stdout.splitlines()) if e["event"] == "note"
    ]
    # eval_fraction 0: the run says it has nothing to evaluate on, and trains anyway
    assert notes[0].startswith("no held-out blocks")
    assert not [
        m
        for m in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
        if m["kind"] == "eval"
    ]
    notes = [{"message": m} for m in notes[1:]]
    assert len(notes) == 1 and "top 16 tokens hold" in notes[0]["message"]
    share = float(notes[0]["message"].split("hold ")[1].split("%")[0]) / 100
    assert 0 < share < 0.5  # a random tiny teacher is nearly flat
    assert "under half" in notes[0]["message"]
    assert "teacher cache: the top 16" in (run_dir / "events.log").read_text()


def test_runs_sharing_a_store_run_the_teacher_once_with_the_same_losses(tiny_lm_pair, tmp_path):
    """The second run of the same teacher, data and cache settings reads every target the
    first wrote (no teacher forward in training) and trains to the same losses bit for bit;
    another temperature gets its own targets (the tail logit depends on it)."""
    teacher, student = tiny_lm_pair
    config = _config(tmp_path, teacher, student)
    config.distillation.teacher_cache.dir = str(tmp_path / "store")

    def run(cfg):
        losses, (calls,), _, setup = _train_epochs(cfg, 1, "loss_kd")
        return losses, calls, setup.teacher_store

    first, first_calls, first_store = run(config)
    second, second_calls, second_store = run(config)
    assert first_calls > 0 and first_store.written > 0
    assert second_calls == 0 and second_store.read >= first_store.written
    assert second == first
    hotter = config.model_copy(deep=True)
    hotter.distillation.temperature = 4.0
    _, hotter_calls, hotter_store = run(hotter)
    assert hotter_calls == first_calls and hotter_store.path != first_store.path


def _hidden(config, **cache):
    hidden = config.model_copy(deep=True)
    hidden.distillation.teacher_cache.kind = "hidden"
    for key, value in cache.items():
        setattr(hidden.distillation.teacher_cache, key, value)
    return hidden


def test_the_hidden_state_cache_is_exact_and_skips_the_teachers_body(tiny_lm_pair, tmp_path):
    """kind hidden keeps the output head's input (hidden_size values a token) and recomputes the
    logits in epoch 2: the losses equal a run without any cache to fp32 rounding, and epoch 2
    runs the teacher only for blocks epoch 1 left out."""
    teacher, student = tiny_lm_pair
    config = _config(tmp_path, teacher, student)
    uncached = config.model_copy(deep=True)
    uncached.distillation.teacher_cache.enabled = False
    exact, calls, per_epoch, s = _train_epochs(_hidden(config))
    reference, reference_calls, _, _ = _train_epochs(uncached)
    assert reference_calls == [per_epoch, per_epoch]
    assert calls[0] == per_epoch and calls[1] < per_epoch / 2
    torch.testing.assert_close(torch.tensor(exact), torch.tensor(reference), rtol=1e-5, atol=1e-6)
    (entry,) = next(iter(s.teacher_cache.values()))
    # every position but the last, which predicts nothing (the forward's logits_to_keep)
    assert entry.shape == (config.dataset.max_length - 1, s.teacher.config.hidden_size)
    assert s.cache_head_error is not None and s.cache_head_error < 1e-4
    lossy, _, _, _ = _train_epochs(config)  # top-16 + tail of a near-flat teacher: not the same
    assert max(abs(a - b) for a, b in zip(lossy, reference, strict=True)) > 1e-3


def test_a_hidden_state_store_is_shared_across_temperatures(tiny_lm_pair, tmp_path):
    """Hidden states do not depend on T or k: a temperature sweep shares one store, and a run
    that reads it trains to the same losses as the run that wrote it."""
    teacher, student = tiny_lm_pair
    config = _hidden(_config(tmp_path, teacher, student), dir=str(tmp_path / "store"))

    def run(cfg):
        losses, (calls,), _, setup = _train_epochs(cfg, 1, "loss_kd")
        return losses, calls, setup

    first, first_calls, first_setup = run(config)
    hotter = config.model_copy(deep=True)
    hotter.distillation.temperature = 4.0
    _, hotter_calls, hotter_setup = run(hotter)
    again, again_calls, _ = run(config)
    assert first_calls > 0 and hotter_calls == again_calls == 0
    assert hotter_setup.teacher_store.path == first_setup.teacher_store.path
    torch.testing.assert_close(torch.tensor(again), torch.tensor(first), rtol=1e-6, atol=0)


def test_a_teacher_that_changes_logits_after_its_head_is_refused(tmp_path):
    """Gemma 2 soft-caps its logits after the head, so the head's input does not give them back:
    kind hidden must say so (exit 2's InvalidInputError) instead of training on wrong targets."""
    import pytest
    import transformers

    from entrenar_tui.core.distill.batches import Batch, _remember, _teacher_forward
    from entrenar_tui.core.errors import InvalidInputError

    cfg = transformers.Gemma2Config(
        vocab_size=128,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        final_logit_softcapping=0.5,
    )
    torch.manual_seed(0)
    model = transformers.Gemma2ForCausalLM(cfg).eval()
    with torch.no_grad():  # raw logits of a few units, capped to +-0.5
        model.get_output_embeddings().weight.mul_(50)
    ids = torch.randint(0, 128, (2, 8))
    config = load_config("demo", ["distillation.teacher_cache.enabled=true"])
    config.distillation.teacher_cache.kind = "hidden"

    class FakeLoss:  # the trainer's loss module only answers which teacher outputs it needs
        needs_attentions = False

    setup = type("S", (), {})()
    setup.teacher, setup.device, setup.loss_fn, setup.config = model, "cpu", FakeLoss(), config
    setup.cache_head_error, setup.teacher_cache, setup.teacher_store = None, {}, None
    outputs = _teacher_forward(setup, Batch([0, 1], ids, ids, None), False, capture_head=True)
    with pytest.raises(InvalidInputError, match="not its output head"):
        _remember(setup, [0, 1], outputs)


def test_estimate_accounts_the_cache_as_the_run_holds_it(tiny_lm_pair, tmp_path):
    """`distill estimate` gives the cache's bytes per token, its host size for this run's tokens
    and the same again on disk with a dir; the bytes per token are those a real run keeps."""
    from entrenar_tui.core.distill.estimate import estimate_distillation

    teacher, student = tiny_lm_pair
    config = _hidden(_config(tmp_path, teacher, student))
    config.training.max_steps = 5
    estimate = estimate_distillation(config, measure_steps=0, device="cpu")
    cache = estimate.teacher_cache
    positions = config.dataset.max_length - 1  # the last one predicts nothing
    tokens = 5 * config.training.batch_size * positions
    assert cache["kind"] == "hidden" and cache["tokens"] == tokens
    assert cache["host_bytes"] == tokens * cache["bytes_per_token"] and cache["disk_bytes"] == 0
    assert any("teacher cache (the output head's input)" in note for note in estimate.notes)
    _, _, _, setup = _train_epochs(config)
    kept = sum(
        t.numel() * t.element_size() for entry in setup.teacher_cache.values() for t in entry
    )
    assert kept == cache["bytes_per_token"] * positions * len(setup.teacher_cache)
    topk = _config(tmp_path, teacher, student)
    topk.distillation.teacher_cache.dir = str(tmp_path / "store")
    on_disk = estimate_distillation(topk, measure_steps=0, device="cpu").teacher_cache
    assert on_disk["bytes_per_token"] == 6 * 16 + 4 and on_disk["tokens"] is None
    assert on_disk["on_disk"] and "as much on disk" in " ".join(
        estimate_distillation(topk, measure_steps=0, device="cpu").notes
    )
