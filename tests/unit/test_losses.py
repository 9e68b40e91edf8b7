"""Distillation losses against values computed by hand (plain math, not the torch code under test)."""

from __future__ import annotations

import math

import pytest
import torch

from entrenar_tui.core.distill.losses import (
    AttentionLoss,
    DistillationLoss,
    HiddenStateLoss,
    KDLoss,
    count_tokens,
    cross_entropy_loss,
)
from entrenar_tui.core.errors import InvalidInputError

# Two tokens, a three-word vocabulary.
STUDENT = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]
TEACHER = [[2.0, 1.0, 0.0], [0.5, 0.5, 2.0]]
TOKENS = list(zip(STUDENT, TEACHER, strict=True))


def softmax(row: list[float], temperature: float = 1.0) -> list[float]:
    exps = [math.exp(z / temperature) for z in row]
    return [e / sum(exps) for e in exps]


def kl(p: list[float], q: list[float]) -> float:
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))


def jsd(p: list[float], q: list[float]) -> float:
    m = [(pi + qi) / 2 for pi, qi in zip(p, q, strict=True)]
    return kl(p, m) / 2 + kl(q, m) / 2


def hand_divergence(divergence: str, student: list[float], teacher: list[float], t: float) -> float:
    p_s, p_t = softmax(student, t), softmax(teacher, t)
    return {"forward_kl": kl(p_t, p_s), "reverse_kl": kl(p_s, p_t), "jsd": jsd(p_t, p_s)}[
        divergence
    ]


def logits(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor([rows], dtype=torch.float64)  # (batch 1, seq 2, vocab 3)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
@pytest.mark.parametrize("divergence", ["forward_kl", "reverse_kl", "jsd"])
def test_kd_equals_t_squared_times_the_mean_divergence_per_token(divergence, temperature):
    per_token = [hand_divergence(divergence, s, t, temperature) for s, t in TOKENS]
    expected = temperature**2 * sum(per_token) / 2
    got = KDLoss(temperature, divergence)(logits(STUDENT), logits(TEACHER))
    assert got.item() == pytest.approx(expected, rel=1e-12)


def test_forward_kl_of_a_closed_form_case():
    # teacher [ln 2, 0, 0] -> p_t = (1/2, 1/4, 1/4); student uniform -> p_s = 1/3 each.
    # KL = 1/2 ln(3/2) + 2 * 1/4 ln(3/4) = 1/2 ln(9/8).
    got = KDLoss(1.0)(logits([[0.0, 0.0, 0.0]])[:, :1], logits([[math.log(2), 0.0, 0.0]])[:, :1])
    assert got.item() == pytest.approx(0.5 * math.log(9 / 8), rel=1e-12)


def test_masked_token_is_left_out_of_kd_and_of_its_denominator():
    mask = torch.tensor([[True, False]])
    got = KDLoss(2.0)(logits(STUDENT), logits(TEACHER), mask)
    assert got.item() == pytest.approx(4 * hand_divergence("forward_kl", STUDENT[0], TEACHER[0], 2))


def test_num_tokens_replaces_the_batch_count():
    mask = torch.tensor([[True, True]])
    one_batch = KDLoss(1.0)(logits(STUDENT), logits(TEACHER), mask)
    window = KDLoss(1.0)(logits(STUDENT), logits(TEACHER), mask, num_tokens=8)
    assert window.item() == pytest.approx(one_batch.item() * 2 / 8, rel=1e-12)


def test_cross_entropy_skips_ignore_index():
    labels = torch.tensor([[2, -100]])
    expected = -math.log(softmax(STUDENT[0])[2])
    assert cross_entropy_loss(logits(STUDENT), labels).item() == pytest.approx(expected, rel=1e-12)
    windowed = cross_entropy_loss(logits(STUDENT), labels, num_tokens=4)
    assert windowed.item() == pytest.approx(expected / 4, rel=1e-12)
    assert count_tokens(labels) == 1


def test_total_is_alpha_kd_plus_one_minus_alpha_ce_and_reports_each_term():
    labels = torch.tensor([[1, 2]])
    kd = 4 * sum(hand_divergence("forward_kl", s, t, 2.0) for s, t in TOKENS) / 2
    ce = -(math.log(softmax(STUDENT[0])[1]) + math.log(softmax(STUDENT[1])[2])) / 2
    terms = DistillationLoss(temperature=2.0, alpha=0.25)(logits(STUDENT), labels, logits(TEACHER))
    values = terms.to_dict()
    assert values["loss_kd"] == pytest.approx(kd, rel=1e-12)
    assert values["loss_ce"] == pytest.approx(ce, rel=1e-12)
    assert values["loss"] == pytest.approx(0.25 * kd + 0.75 * ce, rel=1e-12)
    assert values["loss_hidden"] == 0.0 and values["loss_attention"] == 0.0


def test_zero_weights_need_neither_teacher_logits_nor_hidden_states_nor_attentions():
    loss = DistillationLoss(alpha=0.0)
    assert not (loss.needs_teacher_logits or loss.needs_hidden_states or loss.needs_attentions)
    terms = loss(logits(STUDENT), torch.tensor([[0, 1]]))
    assert terms.loss_kd.item() == 0.0 and terms.loss.item() == terms.loss_ce.item() > 0


def test_a_weighted_term_without_its_inputs_is_a_clear_error():
    hidden = HiddenStateLoss([(0, 0)], 3, 3)
    loss = DistillationLoss(alpha=1.0, hidden_loss=hidden, hidden_weight=0.5)
    assert loss.needs_hidden_states
    with pytest.raises(InvalidInputError, match="hidden states"):
        loss(logits(STUDENT), torch.tensor([[0, 1]]), logits(TEACHER))
    with pytest.raises(InvalidInputError, match="teacher logits"):
        DistillationLoss(alpha=0.5)(logits(STUDENT), torch.tensor([[0, 1]]))
    with pytest.raises(InvalidInputError):
        DistillationLoss(attention_weight=0.1)  # weight without an AttentionLoss


def test_bad_settings_and_shapes_are_input_errors():
    with pytest.raises(InvalidInputError):
        KDLoss(0.0)
    with pytest.raises(InvalidInputError):
        KDLoss(2.0, "tvd")
    with pytest.raises(InvalidInputError, match="shape"):
        KDLoss(1.0)(torch.zeros(1, 2, 3), torch.zeros(1, 2, 4))  # vocabularies differ
    with pytest.raises(InvalidInputError, match="layer 5"):
        HiddenStateLoss([(0, 5)], 2, 2)([torch.zeros(1, 1, 2)], [torch.zeros(1, 1, 2)])


def test_masked_vocabulary_entries_give_the_kl_over_the_support_without_nans():
    # A teacher reconstructed from top-k has -inf elsewhere; the student masks the same entry.
    student = torch.tensor([[[1.0, 0.0, float("-inf")]]], requires_grad=True)
    teacher = torch.tensor([[[0.0, 0.0, float("-inf")]]])
    loss = KDLoss(1.0)(student, teacher)
    (grad,) = torch.autograd.grad(loss, student)
    assert loss.item() == pytest.approx(kl([0.5, 0.5], softmax([1.0, 0.0])), rel=1e-6)
    assert torch.isfinite(grad).all() and grad[0, 0, 2] == 0


def test_bf16_logits_are_upcast_to_float32():
    student, teacher = logits(STUDENT).bfloat16(), logits(TEACHER).bfloat16()
    got = KDLoss(1.0)(student, teacher)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(KDLoss(1.0)(student.float(), teacher.float()).item())


# Hidden states: batch 1, three positions, the last one padding.
H_STUDENT = [[1.0, 2.0], [0.0, 1.0], [9.0, 9.0]]
H_TEACHER = [[1.0, 0.0], [2.0, 1.0], [-9.0, 5.0]]
MASK = torch.tensor([[1, 1, 0]])


def states(rows: list[list[float]]) -> list[torch.Tensor]:
    return [torch.tensor([rows], dtype=torch.float64)]


def test_hidden_mse_averages_features_then_non_padding_positions():
    # position 0: ((0)^2 + (2)^2) / 2 = 2; position 1: ((-2)^2 + 0) / 2 = 2; padding excluded.
    loss = HiddenStateLoss([(0, 0)], 2, 2, "mse")
    assert loss(states(H_STUDENT), states(H_TEACHER), MASK).item() == pytest.approx(2.0)
    assert loss.projection_state_dict() == {}  # same width: identity, nothing to save


def test_hidden_cosine_is_one_minus_cosine_per_position():
    # position 0: cos((1,2),(1,0)) = 1/sqrt(5); position 1: cos((0,1),(2,1)) = 1/sqrt(5).
    loss = HiddenStateLoss([(0, 0)], 2, 2, "cosine")
    got = loss(states(H_STUDENT), states(H_TEACHER), MASK)
    assert got.item() == pytest.approx(1 - 1 / math.sqrt(5), rel=1e-7)


def test_hidden_loss_projects_student_to_teacher_width_and_keeps_the_projection_apart():
    loss = HiddenStateLoss([(0, 0)], 2, 3, "mse").double()
    with torch.no_grad():  # W maps (a, b) -> (a, b, a + b)
        loss.projections["0"].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
        loss.projections["0"].bias.zero_()
    teacher = [[1.0, 2.0, 0.0], [0.0, 1.0, 4.0], [0.0, 0.0, 0.0]]
    # projected student: (1, 2, 3) and (0, 1, 1): squared errors (0 + 0 + 9) / 3 and (0 + 0 + 9) / 3
    got = loss(states(H_STUDENT), states(teacher), MASK)
    assert got.item() == pytest.approx(3.0)
    got.backward()
    assert loss.projections["0"].weight.grad.abs().sum() > 0  # the projection learns
    saved = loss.projection_state_dict()
    assert set(saved) == {"0.weight", "0.bias"}
    fresh = HiddenStateLoss([(0, 0)], 2, 3, "mse").double()
    fresh.load_projection_state_dict(saved)
    assert fresh(states(H_STUDENT), states(teacher), MASK).item() == pytest.approx(3.0)


def test_hidden_loss_averages_over_mapped_layers():
    loss = HiddenStateLoss([(0, 1), (1, 0)], 2, 2, "mse")
    zeros, ones = torch.zeros(1, 1, 2), torch.ones(1, 1, 2)
    # pair (0 -> 1): student 0 vs teacher 1 = 0; pair (1 -> 0): (3 - 1)^2 = 4; mean 2.
    assert loss([zeros, 3 * ones], [ones, zeros]).item() == pytest.approx(2.0)


# Attention: batch 1, query positions 2 (the second one padding), keys 2.
ATT_S_HEAD0 = [[0.5, 0.5], [0.9, 0.1]]
ATT_S_HEAD1 = [[0.8, 0.2], [0.1, 0.9]]
ATT_T_HEAD0 = [[0.25, 0.75], [0.0, 1.0]]
ATT_T_HEAD1 = [[1.0, 0.0], [0.5, 0.5]]
QUERY_MASK = torch.tensor([[1, 0]])


def attn(*heads: list[list[float]]) -> list[torch.Tensor]:
    return [torch.tensor([list(heads)], dtype=torch.float64)]


def test_attention_kl_compares_head_by_head_when_head_counts_match():
    head0 = kl([0.25, 0.75], [0.5, 0.5])
    head1 = 1.0 * math.log(1.0 / 0.8)  # the teacher's 0 adds nothing
    loss = AttentionLoss([(0, 0)], "kl")
    got = loss(attn(ATT_S_HEAD0, ATT_S_HEAD1), attn(ATT_T_HEAD0, ATT_T_HEAD1), QUERY_MASK)
    assert got.item() == pytest.approx((head0 + head1) / 2, rel=1e-12)


def test_attention_kl_averages_heads_when_head_counts_differ():
    teacher_mean = [(0.25 + 1.0) / 2, (0.75 + 0.0) / 2]  # query 0, averaged over 2 heads
    loss = AttentionLoss([(0, 0)], "kl")
    got = loss(attn(ATT_S_HEAD0), attn(ATT_T_HEAD0, ATT_T_HEAD1), QUERY_MASK)
    assert got.item() == pytest.approx(kl(teacher_mean, [0.5, 0.5]), rel=1e-12)


def test_attention_mse_per_head_and_head_averaged():
    loss = AttentionLoss([(0, 0)], "mse")
    per_head = [((0.5 - 0.25) ** 2 + (0.5 - 0.75) ** 2) / 2, ((0.8 - 1) ** 2 + (0.2 - 0) ** 2) / 2]
    got = loss(attn(ATT_S_HEAD0, ATT_S_HEAD1), attn(ATT_T_HEAD0, ATT_T_HEAD1), QUERY_MASK)
    assert got.item() == pytest.approx(sum(per_head) / 2, rel=1e-12)
    averaged = ((0.5 - 0.625) ** 2 + (0.5 - 0.375) ** 2) / 2
    got = loss(attn(ATT_S_HEAD0), attn(ATT_T_HEAD0, ATT_T_HEAD1), QUERY_MASK)
    assert got.item() == pytest.approx(averaged, rel=1e-12)


def test_all_four_terms_combine_with_their_weights():
    labels = torch.tensor([[1, 2]])
    hidden = HiddenStateLoss([(0, 0)], 2, 2, "mse")
    attention = AttentionLoss([(0, 0)], "kl")
    loss = DistillationLoss(
        temperature=1.0,
        alpha=0.5,
        hidden_loss=hidden,
        hidden_weight=0.3,
        attention_loss=attention,
        attention_weight=0.1,
    )
    mask2 = torch.tensor([[1, 0]])
    terms = loss(
        logits(STUDENT),
        labels,
        logits(TEACHER),
        attention_mask=mask2,
        student_hidden=states(H_STUDENT[:2]),
        teacher_hidden=states(H_TEACHER[:2]),
        student_attentions=attn(ATT_S_HEAD0),
        teacher_attentions=attn(ATT_T_HEAD0),
    )
    assert terms.loss_hidden.item() == pytest.approx(2.0)  # position 0 only, see the MSE test
    assert terms.loss_attention.item() == pytest.approx(kl([0.25, 0.75], [0.5, 0.5]))
    expected = 0.5 * terms.loss_kd + 0.5 * terms.loss_ce + 0.3 * 2.0 + 0.1 * terms.loss_attention
    assert terms.loss.item() == pytest.approx(expected.item(), rel=1e-12)


def test_shifted_logits_of_any_leading_shape_give_the_same_kd_and_ce():
    student = torch.randn(2, 5, 4, dtype=torch.float64)
    teacher = torch.randn(2, 5, 4, dtype=torch.float64)
    labels = torch.randint(0, 4, (2, 5))
    shifted, shifted_labels = student[:, :-1], labels[:, 1:]  # a causal LM's alignment: a view
    kd = KDLoss(2.0, chunk_tokens=3)(shifted, teacher[:, :-1])
    flat = KDLoss(2.0, chunk_tokens=100)(shifted.reshape(8, 4), teacher[:, :-1].reshape(8, 4))
    assert kd.item() == pytest.approx(flat.item(), rel=1e-12)
    ce = cross_entropy_loss(shifted, shifted_labels, chunk_tokens=3)
    reference = torch.nn.functional.cross_entropy(shifted.reshape(8, 4), shifted_labels.reshape(8))
    assert ce.item() == pytest.approx(reference.item(), rel=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_forward_kl_written_out_gradient_equals_autograd(dtype, temperature):
    """KDLoss's forward KL computes its gradient by hand ((q - p) / T per token, no autograd
    buffers): loss and gradient must equal autograd through the reference divergence, with a
    mask, a masked vocabulary entry (-inf) and chunks smaller than the sequence."""
    from entrenar_tui.core.distill.losses import token_divergence

    generator = torch.Generator().manual_seed(0)
    student = (torch.randn(2, 7, 50, generator=generator) * 3).to(dtype).requires_grad_(True)
    teacher = (torch.randn(2, 7, 50, generator=generator) * 3).to(dtype)
    teacher[..., 3] = float("-inf")
    mask = torch.rand(2, 7, generator=generator) > 0.3
    loss = KDLoss(temperature, chunk_tokens=4)(student, teacher, mask)
    (grad,) = torch.autograd.grad(loss, student)
    reference_student = student.detach().clone().requires_grad_(True)
    divergence = token_divergence(reference_student, teacher, "forward_kl", temperature)
    reference = temperature**2 * (divergence * mask).sum() / mask.sum()
    (reference_grad,) = torch.autograd.grad(reference, reference_student)
    torch.testing.assert_close(loss, reference, rtol=1e-5, atol=1e-6)
    tolerance = {"rtol": 1e-4, "atol": 1e-6} if dtype == torch.float32 else {}
    torch.testing.assert_close(grad, reference_grad, **tolerance)
    assert grad.dtype == dtype and torch.isfinite(grad).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cross_entropy_written_out_gradient_equals_torch(dtype):
    """cross_entropy_loss computes its gradient by hand (softmax - one-hot): loss and gradient
    equal F.cross_entropy's in float32, with ignored labels and chunks smaller than the batch."""
    import torch.nn.functional as F

    from entrenar_tui.core.distill.losses import IGNORE_INDEX, cross_entropy_loss

    generator = torch.Generator().manual_seed(1)
    logits = (torch.randn(3, 5, 40, generator=generator) * 4).to(dtype).requires_grad_(True)
    labels = torch.randint(0, 40, (3, 5), generator=generator)
    labels[0, :2] = IGNORE_INDEX
    loss = cross_entropy_loss(logits, labels, chunk_tokens=6)
    (grad,) = torch.autograd.grad(loss, logits)
    reference_logits = logits.detach().float().requires_grad_(True)
    reference = F.cross_entropy(reference_logits.flatten(0, 1), labels.flatten())
    (reference_grad,) = torch.autograd.grad(reference, reference_logits)
    torch.testing.assert_close(loss, reference, rtol=1e-5, atol=1e-6)
    tolerance = {"rtol": 1e-4, "atol": 1e-6} if dtype == torch.float32 else {}
    torch.testing.assert_close(grad.float(), reference_grad.to(dtype).float(), **tolerance)
    assert grad.dtype == dtype and not grad[0, :2].any()


def test_workspace_sized_chunks_of_a_shifted_view_equal_autograd(monkeypatch):
    """The trainer's case: a shifted (non-contiguous) fp32 student view against a bf16 teacher,
    chunked by the workspace budget (shrunk here to 3 positions, the last chunk partial)."""
    import torch.nn.functional as F

    from entrenar_tui.core.distill import loss_workspace
    from entrenar_tui.core.distill.losses import cross_entropy_loss, token_divergence

    monkeypatch.setitem(loss_workspace.CHUNK_BYTES, "cpu", 3 * 2 * 4 * 30)
    generator = torch.Generator().manual_seed(2)
    full = (torch.randn(2, 9, 30, generator=generator) * 3).requires_grad_(True)
    teacher = (torch.randn(2, 9, 30, generator=generator) * 3).bfloat16()[:, :-1]
    labels = torch.randint(0, 30, (2, 8), generator=generator)
    kd = KDLoss(2.0)(full[:, :-1], teacher)
    ce = cross_entropy_loss(full[:, :-1], labels)
    grad_kd, grad_ce = (torch.autograd.grad(term, full, retain_graph=True)[0] for term in (kd, ce))
    reference_full = full.detach().clone().requires_grad_(True)
    shifted = reference_full[:, :-1]
    reference_kd = 4.0 * token_divergence(shifted, teacher, "forward_kl", 2.0).mean()
    reference_ce = F.cross_entropy(shifted.flatten(0, 1), labels.flatten())
    for term, reference, grad in ((kd, reference_kd, grad_kd), (ce, reference_ce, grad_ce)):
        (reference_grad,) = torch.autograd.grad(reference, reference_full)
        torch.testing.assert_close(term, reference, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(grad, reference_grad, rtol=1e-4, atol=1e-6)
        assert not grad[:, -1].any()  # the last position predicts nothing
