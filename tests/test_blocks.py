"""Shared blocks and heads: shapes, masks, padding invariance, gradients, reference maths."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from avdet.models.blocks import LayerNorm, MaskedConv1d, TransformerBlock, downsample_mask, sinusoid_encoding
from avdet.models.heads import ClassificationHead, RegressionHead


def _mask(lengths: list[int], total: int) -> torch.Tensor:
    return torch.arange(total)[None, :] < torch.tensor(lengths)[:, None]  # (B, T)


def _perturb(module: nn.Module, seed: int = 0) -> nn.Module:
    """Move every parameter off its initial value so that zero-initialised scales/biases matter."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen))
    return module


def _pad(x: torch.Tensor, total: int) -> torch.Tensor:
    return torch.cat([x, x.new_zeros(x.shape[0], total - x.shape[1], x.shape[2])], dim=1)


@pytest.mark.slow  # over half a second: .ci/run runs it, the inner loop does not
def test_sinusoid_encoding_matches_reference_formula() -> None:
    n, dim = 7, 10
    angles = np.array([[pos / np.power(10000, 2 * (j // 2) / dim) for j in range(dim)] for pos in range(n)])
    angles[:, 0::2] = np.sin(angles[:, 0::2])
    angles[:, 1::2] = np.cos(angles[:, 1::2])
    table = sinusoid_encoding(n, dim)
    assert table.shape == (n, dim) and table.dtype == torch.float32
    torch.testing.assert_close(table, torch.from_numpy(angles).float())


def test_layernorm_normalises_channels() -> None:
    norm = LayerNorm(6)
    with torch.no_grad():
        norm.weight.fill_(2.0)
        norm.bias.fill_(0.5)
    x = torch.randn(2, 5, 6) * 3 + 1
    out = norm(x)
    expected = (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + 1e-5) * 2 + 0.5
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("stride", [1, 2])
def test_masked_conv_shapes_and_zero_padding(stride: int) -> None:
    conv = _perturb(MaskedConv1d(4, 6, 3, stride=stride))
    x, mask = torch.randn(2, 16, 4), _mask([16, 9], 16)
    out = conv(x, mask)
    out_mask = downsample_mask(mask, stride)
    assert out.shape == (2, 16 // stride, 6)
    assert out_mask.shape == (2, 16 // stride)
    assert torch.all(out[~out_mask] == 0)
    assert torch.all(out[out_mask].abs().sum(-1) > 0)


def test_masked_conv_rejects_even_kernel() -> None:
    with pytest.raises(ValueError, match="odd"):
        MaskedConv1d(4, 4, 2)


def test_downsample_mask_is_nearest_neighbour() -> None:
    mask = _mask([5], 8)
    assert downsample_mask(mask, 2).tolist() == [[True, True, True, False]]
    with pytest.raises(ValueError, match="divisible"):
        downsample_mask(_mask([3], 7), 2)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("cross", [False, True])
def test_transformer_block_shapes_masks_and_padding_invariance(stride: int, cross: bool) -> None:
    torch.manual_seed(0)
    block = _perturb(TransformerBlock(16, 4, drop_path=0.1, stride=stride)).eval()
    valid = 10
    x, q = torch.randn(1, valid, 16), torch.randn(1, valid, 16)
    outs = []
    for total in (12, 32):
        mask = _mask([valid], total)
        out = block(_pad(x, total), mask, query=_pad(q, total) if cross else None)
        out_mask = downsample_mask(mask, stride)
        assert out.shape == (1, total // stride, 16)
        assert torch.all(out[~out_mask] == 0)
        outs.append(out[out_mask])
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-6)


def test_transformer_block_batch_rows_are_independent() -> None:
    torch.manual_seed(1)
    block = _perturb(TransformerBlock(8, 2, drop_path=0.1)).eval()
    x, mask = torch.randn(3, 16, 8), _mask([16, 11, 4], 16)
    x = x * mask[..., None]
    batched = block(x, mask)
    for i in range(3):
        torch.testing.assert_close(batched[i : i + 1], block(x[i : i + 1], mask[i : i + 1]), rtol=1e-5, atol=1e-6)


def test_transformer_block_attention_spans_the_sequence() -> None:
    torch.manual_seed(2)
    block = _perturb(TransformerBlock(8, 2)).eval()
    x, mask = torch.randn(1, 16, 8), _mask([16], 16)
    base = block(x, mask)
    changed = x.clone()
    changed[0, 15] = torch.randn(8) * 3  # far beyond the k=3 conv receptive field of step 0
    assert not torch.allclose(block(changed, mask)[0, 0], base[0, 0])


def test_transformer_block_all_padded_rows_stay_finite() -> None:
    block = _perturb(TransformerBlock(8, 1, hidden_dim=8)).eval()
    x, mask = torch.randn(2, 5, 8), _mask([5, 0], 5)
    out = block(x, mask)
    assert torch.isfinite(out).all()
    assert torch.all(out[1] == 0)


def test_transformer_block_layerscale_only_with_drop_path() -> None:
    assert isinstance(TransformerBlock(8, 2).drop_path_attn, nn.Identity)
    scaled = TransformerBlock(8, 2, drop_path=0.1)
    torch.testing.assert_close(scaled.drop_path_attn.scale, torch.full((8,), 1e-4))


def test_transformer_block_drop_path_is_stochastic_only_in_training() -> None:
    block = _perturb(TransformerBlock(8, 2, drop_path=0.5))
    x, mask = torch.randn(16, 6, 8), _mask([6] * 16, 6)
    block.eval()
    torch.testing.assert_close(block(x, mask), block(x, mask))
    block.train()
    torch.manual_seed(3)
    first = block(x, mask)
    torch.manual_seed(4)
    assert not torch.allclose(first, block(x, mask))


@pytest.mark.parametrize("stride", [1, 2])
def test_transformer_block_gradients_reach_every_parameter(stride: int) -> None:
    block = _perturb(TransformerBlock(8, 2, drop_path=0.1, stride=stride))
    x, q, mask = torch.randn(2, 8, 8), torch.randn(2, 8, 8), _mask([8, 5], 8)
    block(x, mask, query=q).square().sum().backward()
    for name, p in block.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def _head_inputs(dim: int = 12) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    mask = _mask([16, 7], 16)
    masks = [mask, downsample_mask(mask, 2), downsample_mask(mask, 4)]
    feats = [torch.randn(2, m.shape[1], dim) * m[..., None] for m in masks]
    return feats, masks


def test_classification_head_prior_and_shapes() -> None:
    head = ClassificationHead(12, 10, 5, num_layers=3, prior_prob=0.01)
    feats, masks = _head_inputs()
    logits = head(feats, masks)
    assert [tuple(t.shape) for t in logits] == [(2, 16, 5), (2, 8, 5), (2, 4, 5)]
    bias = head.classifier.conv.bias
    torch.testing.assert_close(bias, torch.full((5,), -math.log(99.0)))
    for out, mask in zip(logits, masks, strict=True):
        assert torch.all(out[~mask] == 0)


def test_classification_head_empty_classes_get_a_silencing_bias() -> None:
    head = ClassificationHead(12, 10, 5, empty_classes=(1, 3))
    bias = head.classifier.conv.bias.detach()
    assert bias[1] < -13 and bias[3] < -13 and bias[0] > -5


@pytest.mark.parametrize("class_aware", [True, False])
def test_regression_head_shapes_nonnegative_and_masked(class_aware: bool) -> None:
    head = _perturb(RegressionHead(12, 10, 5, num_levels=3, class_aware=class_aware))
    feats, masks = _head_inputs()
    offsets = head(feats, masks)
    k = 5 if class_aware else 1
    assert [tuple(t.shape) for t in offsets] == [(2, 16, k, 2), (2, 8, k, 2), (2, 4, k, 2)]
    for out, mask in zip(offsets, masks, strict=True):
        assert torch.all(out >= 0)
        assert torch.all(out[~mask] == 0)
        assert out[mask].sum() > 0


def test_regression_head_level_scales_are_separate() -> None:
    head = _perturb(RegressionHead(12, 10, 5, num_levels=2))
    feats, masks = _head_inputs()
    feats, masks = [feats[0], feats[0]], [masks[0], masks[0]]
    with torch.no_grad():
        head.scales[0].scale.fill_(1.0)
        head.scales[1].scale.fill_(2.0)
    low, high = head(feats, masks)
    torch.testing.assert_close(high, 2 * low)
    with pytest.raises(ValueError, match="levels"):
        head(feats[:1], masks[:1])


def test_heads_gradients_reach_every_parameter() -> None:
    cls_head = _perturb(ClassificationHead(12, 10, 5))
    reg_head = _perturb(RegressionHead(12, 10, 5, num_levels=3))
    feats, masks = _head_inputs()
    loss = sum(t.square().sum() for t in cls_head(feats, masks)) + sum(t.sum() for t in reg_head(feats, masks))
    loss.backward()
    for module in (cls_head, reg_head):
        for name, p in module.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name
