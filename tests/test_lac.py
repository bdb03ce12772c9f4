"""LAC: window sampling by hand, fixed windows against a brute-force band mask, zero adaptation == fixed,
padding invariance, shapes, masks and gradients."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from avdet.models.lac import (
    CrossModalAttention,
    Downsample,
    LACBlock,
    LACPyramid,
    masked_softmax,
    sample_linear,
    window_positions,
    with_neighbours,
)


def test_window_positions_hand_example() -> None:
    zero = torch.zeros(1, 1, 3)
    assert window_positions(zero, zero, 4)[0, 0].tolist() == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    # window 1 (centre 5.5), offset half a window -> centre 7.5, scale log 2 -> samples 2 steps apart
    scale = torch.tensor([[[0.0, math.log(2.0), 0.0]]])
    offset = torch.tensor([[[0.0, 0.5, -0.25]]])
    pos = window_positions(scale, offset, 4)[0, 0]
    assert torch.allclose(pos[1], torch.tensor([4.5, 6.5, 8.5, 10.5]))
    assert torch.allclose(pos[2], torch.tensor([7.0, 8.0, 9.0, 10.0]))


def test_sample_linear_hand_example() -> None:
    x = torch.tensor([0.0, 10.0, 20.0, 30.0, 40.0]).reshape(1, 1, 5, 1)  # (B, h, T, d)
    valid = torch.tensor([[True, True, True, True, False]])  # step 4 is padding
    pos = torch.tensor([[[0.25, 1.5, 3.0, 3.5, -0.5, 2.0, 4.0]]])
    values, ok = sample_linear(x, valid, pos)
    assert ok[0, 0].tolist() == [True, True, True, False, False, True, False]
    assert values[0, 0, :, 0].tolist() == pytest.approx([2.5, 15.0, 30.0, 0.0, 0.0, 20.0, 0.0])


def test_with_neighbours() -> None:
    x = torch.arange(6.0).reshape(1, 1, 3, 2)  # windows [0, 1], [2, 3], [4, 5]
    out = with_neighbours(x)
    assert out[0, 0].tolist() == [[0, 0, 0, 1, 2, 3], [0, 1, 2, 3, 4, 5], [2, 3, 4, 5, 0, 0]]


def test_masked_softmax_empty_row_is_zero() -> None:
    scores = torch.randn(2, 3)
    valid = torch.tensor([[True, False, True], [False, False, False]])
    out = masked_softmax(scores, valid)
    assert out[0, 1] == 0 and out[0].sum().item() == pytest.approx(1.0)
    assert out[1].abs().sum() == 0


def _brute_force(attn: CrossModalAttention, query, context, mask, band: int | None) -> torch.Tensor:
    """Plain masked attention over a (T, T) mask: key s is visible to query t when |t//W - s//W| <= 1."""
    b, t, d = query.shape
    h, hd = attn.num_heads, attn.head_dim
    q = attn.q(query).reshape(b, t, h, hd).transpose(1, 2)  # (B, h, T, d)
    k = attn.k(context).reshape(b, t, h, hd).transpose(1, 2)  # (B, h, T, d)
    v = attn.v(context).reshape(b, t, h, hd).transpose(1, 2)  # (B, h, T, d)
    allowed = mask[:, None, None, :].expand(b, 1, t, t)
    if band is not None:
        win = torch.arange(t) // band
        allowed = allowed & ((win[:, None] - win[None, :]).abs() <= 1)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
    out = out.transpose(1, 2).reshape(b, t, d)  # (B, T, D)
    return attn.out(out) * mask[..., None]


@pytest.fixture()
def inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    mask = torch.ones(2, 22, dtype=torch.bool)
    mask[1, 13:] = False
    return torch.randn(2, 22, 16), torch.randn(2, 22, 16), mask


def test_fixed_windows_equal_band_attention(inputs) -> None:
    query, context, mask = inputs
    attn = CrossModalAttention(16, 4, window=4, attention="fixed")
    assert torch.allclose(attn(query, context, mask), _brute_force(attn, query, context, mask, 4), atol=1e-5)


def test_global_equals_full_attention(inputs) -> None:
    query, context, mask = inputs
    attn = CrossModalAttention(16, 4, window=4, attention="global")
    assert torch.allclose(attn(query, context, mask), _brute_force(attn, query, context, mask, None), atol=1e-5)


def test_zero_adaptation_equals_fixed_windows(inputs) -> None:
    query, context, mask = inputs
    fixed = CrossModalAttention(16, 4, window=4, attention="fixed")
    adaptive = CrossModalAttention(16, 4, window=4, attention="adaptive")
    missing = adaptive.load_state_dict(fixed.state_dict(), strict=False).missing_keys
    assert sorted(missing) == ["adapt.proj.bias", "adapt.proj.weight"]
    assert torch.allclose(adaptive(query, context, mask), fixed(query, context, mask), atol=1e-6)
    with torch.no_grad():  # once the windows move, the two differ
        adaptive.adapt.proj.bias.normal_()
    assert not torch.allclose(adaptive(query, context, mask), fixed(query, context, mask), atol=1e-3)


@pytest.mark.parametrize("attention", ["adaptive", "fixed", "global"])
def test_attention_padding_invariance(inputs, attention: str) -> None:
    query, context, mask = inputs
    torch.manual_seed(1)
    attn = CrossModalAttention(16, 4, window=4, attention=attention)
    if attn.adapt is not None:  # large, random windows: samples of empty windows must not leak in
        torch.nn.init.normal_(attn.adapt.proj.weight, std=1.0)
        torch.nn.init.normal_(attn.adapt.proj.bias, std=2.0)
    short = attn(query[1:, :13], context[1:, :13], mask[1:, :13])
    for extra in (3, 9, 30):
        q = F.pad(query[1:, :13], (0, 0, 0, extra), value=7.0)  # garbage padding
        c = F.pad(context[1:, :13], (0, 0, 0, extra), value=-3.0)
        m = F.pad(mask[1:, :13], (0, extra), value=False)
        out = attn(q, c, m)
        assert torch.allclose(out[:, :13], short, atol=1e-5)
        assert out[:, 13:].abs().sum() == 0


def test_block_and_downsample_shapes_and_masks(inputs) -> None:
    query, context, mask = inputs
    block = LACBlock(16, 4, window=4, attention="adaptive")
    out = block(query * mask[..., None], context * mask[..., None], mask)
    assert out.shape == query.shape and out[1, 13:].abs().sum() == 0
    down = Downsample(16)
    x, m = down(out, mask)
    assert x.shape == (2, 11, 16) and m[1].tolist() == [True] * 7 + [False] * 4
    assert x[1, 7:].abs().sum() == 0
    with pytest.raises(ValueError):
        down(out[:, :21], mask[:, :21])


@pytest.mark.parametrize("attention", ["adaptive", "fixed", "global"])
def test_pyramid_shapes_masks_and_padding(attention: str) -> None:
    torch.manual_seed(2)
    pyr = LACPyramid(16, 4, num_levels=4, window=4, attention=attention).eval()
    audio, visual = torch.randn(1, 40, 16), torch.randn(1, 40, 16)
    mask = torch.zeros(1, 40, dtype=torch.bool)
    mask[:, :27] = True
    audio, visual = audio * mask[..., None], visual * mask[..., None]
    a, v, m = pyr(audio, visual, mask)
    assert pyr.strides == [1, 2, 4, 8]
    assert [x.shape[1] for x in a] == [40, 20, 10, 5] and [x.shape[1] for x in v] == [40, 20, 10, 5]
    assert [int(x.sum()) for x in m] == [27, 14, 7, 4]
    for feats, masks in ((a, m), (v, m)):
        for x, mk in zip(feats, masks, strict=True):
            assert x[~mk].abs().sum() == 0
    # same valid steps followed by more padding: identical outputs on the valid steps
    a2, v2, _ = pyr(F.pad(audio, (0, 0, 0, 24)), F.pad(visual, (0, 0, 0, 24)), F.pad(mask, (0, 24)))
    for x, y, mk in zip(a + v, a2 + v2, m + m, strict=True):
        assert torch.allclose(x[mk], y[:, : x.shape[1]][mk], atol=1e-5)


def test_pyramid_gradients_reach_every_parameter() -> None:
    torch.manual_seed(3)
    pyr = LACPyramid(16, 4, num_levels=3, window=4, attention="adaptive")
    mask = torch.ones(2, 16, dtype=torch.bool)
    mask[1, 10:] = False
    a, v, _ = pyr(torch.randn(2, 16, 16) * mask[..., None], torch.randn(2, 16, 16) * mask[..., None], mask)
    sum(x.square().sum() + y.sin().sum() for x, y in zip(a, v, strict=True)).backward()
    for name, p in pyr.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_bad_settings_are_errors() -> None:
    with pytest.raises(ValueError):
        CrossModalAttention(16, 4, attention="deformable")
    with pytest.raises(ValueError):
        CrossModalAttention(18, 4)
