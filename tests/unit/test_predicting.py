"""The trainer asks a model for logits at every position but the last (`logits_to_keep`), where
its forward takes that argument; the losses then see the same predictions as when the last
position is sliced off afterwards."""

from __future__ import annotations

import torch
import transformers

from entrenar_tui.core.distill.batches import predicting, predictions


def tiny_llama():
    config = transformers.LlamaConfig(
        vocab_size=40,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=32,
    )
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config).eval()


def test_kept_logits_equal_the_sliced_ones_and_their_gradient():
    model = tiny_llama()
    ids = torch.randint(0, 40, (2, 9))
    kwargs = predicting(model, ids)
    assert kwargs["logits_to_keep"].tolist() == list(range(8))
    kept = model(input_ids=ids, **kwargs).logits
    full = model(input_ids=ids).logits
    assert kept.shape == (2, 8, 40)
    torch.testing.assert_close(predictions(kept, 9), predictions(full, 9))
    grads = []
    for logits in (kept, full):
        model.zero_grad()
        predictions(logits, 9).logsumexp(-1).sum().backward()
        grads.append(model.lm_head.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


def test_a_forward_without_logits_to_keep_gets_nothing_and_is_sliced_afterwards():
    class Plain(torch.nn.Module):
        def forward(self, input_ids):
            return input_ids

    assert predicting(Plain(), torch.zeros(1, 5, dtype=torch.long)) == {}
    full = torch.randn(1, 5, 3)
    assert predictions(full, 5).shape == (1, 4, 3)
