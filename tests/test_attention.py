"""sdlearn.attention: written-out attention = SDPA = diffusers' Attention; capturing maps for heatmaps."""
import pytest
import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention as DiffusersAttention

from sdlearn.attention import (Attention, attention_heatmaps, capture_attention, merge_heads,
                               scaled_dot_product_attention, split_heads)

# float32 round-off: the fused kernel and the written-out formula sum the same few hundred products in
# different orders (and SDPA uses an online softmax); errors are a few ulps of O(1) values, so 1e-5.
ATOL = 1e-5


pytestmark = pytest.mark.usefixtures("one_thread")   # tests/conftest.py


def test_written_out_equals_sdpa_and_rows_sum_to_one():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, n, 16, generator=g) for n in (10, 7, 7))
    out, probs = scaled_dot_product_attention(q, k, v)
    assert out.shape == (2, 4, 10, 16) and probs.shape == (2, 4, 10, 7)
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 4, 10))
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v), atol=ATOL, rtol=0)


def test_split_merge_heads_roundtrip():
    x = torch.randn(3, 5, 24)
    assert split_heads(x, 4).shape == (3, 4, 5, 6)
    torch.testing.assert_close(merge_heads(split_heads(x, 4)), x, atol=0, rtol=0)


@pytest.mark.parametrize("context_dim", [None, 12])
@pytest.mark.parametrize("fast", [True, False])
def test_matches_diffusers_attention(context_dim, fast):
    torch.manual_seed(0)
    ref = DiffusersAttention(query_dim=32, cross_attention_dim=context_dim, heads=4, dim_head=8).eval()
    ours = Attention(32, context_dim, heads=4, dim_head=8).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)  # same keys: to_q, to_k, to_v, to_out.0
    ours.fast = fast
    x = torch.randn(2, 9, 32)
    ctx = None if context_dim is None else torch.randn(2, 5, context_dim)
    with torch.no_grad():
        torch.testing.assert_close(ours(x, ctx), ref(x, encoder_hidden_states=ctx), atol=ATOL, rtol=0)


def overflowing_attention() -> tuple[Attention, torch.Tensor, torch.Tensor]:
    """Cross-attention whose logits overflow float16: q ~ 8 and k ~ 512 in each of 16 dimensions give
    q.k ~ 66,000 > 65,504, float16's largest number. Every input and weight is exact in float16 (k moves
    in steps of 0.5, so logits differ by a few units and the softmax is far from one-hot)."""
    d = 16
    g = torch.Generator().manual_seed(0)
    attn = Attention(d, d, heads=1, dim_head=d)
    with torch.no_grad():
        for linear in (attn.to_q, attn.to_k, attn.to_out[0]):
            linear.weight.copy_(torch.eye(d))
        attn.to_out[0].bias.zero_()
        attn.to_v.weight.copy_(torch.randint(-8, 9, (d, d), generator=g) / 2048)
    x = 8 + torch.randint(-64, 65, (2, 3, d), generator=g) / 128             # (B, N, d): q = x
    ctx = 512 + torch.randint(-1, 2, (2, 5, d), generator=g) / 2             # (B, M, d): k = ctx
    return attn.eval(), x, ctx


@pytest.mark.parametrize("fast", [True, False])
def test_upcast_computes_float16_attention_in_float32(fast):
    attn, x, ctx = overflowing_attention()
    probs = scaled_dot_product_attention(x[:, None], ctx[:, None], ctx[:, None])[1]
    assert (x @ ctx.transpose(1, 2)).max() > 65504 and probs.max() < 0.9   # overflows; not one-hot
    attn.fast = fast
    with torch.no_grad():
        full = attn(x, ctx)                                                   # the float32 reference
        attn.half()
        attn.upcast = True
        upcast = attn(x.half(), ctx.half())
        attn.upcast = False
        plain = attn(x.half(), ctx.half())
    assert upcast.dtype == torch.float16
    # float16 rounds to 2**-11 relative: the projections and the output, a few ulps of |out| <= 9
    torch.testing.assert_close(upcast.float(), full, atol=2e-2, rtol=0)
    if not fast:  # written out in float16, q k^T is inf and the softmax NaN (the fused CPU kernel scales first)
        assert not plain.isfinite().all()


class TwoLayers(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.self_attn = Attention(16, None, heads=2, dim_head=8)
        self.cross_attn = Attention(16, 6, heads=2, dim_head=8)

    def forward(self, x, ctx):
        return self.cross_attn(self.self_attn(x), ctx)


def test_capture_records_cross_attention_and_is_off_outside():
    torch.manual_seed(0)
    model = TwoLayers().eval()
    x, ctx = torch.randn(2, 4 * 6, 16), torch.randn(2, 5, 6)
    with torch.no_grad():
        plain = model(x, ctx)
        with capture_attention(model) as maps:
            captured_out = model(x, ctx)
            model(x, ctx)
        after = model(x, ctx)
    assert list(maps) == ["cross_attn"] and len(maps["cross_attn"]) == 2
    probs = maps["cross_attn"][0]
    assert probs.shape == (2, 2, 24, 5)                     # (B, heads, H*W, T)
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 2, 24))
    torch.testing.assert_close(captured_out, plain, atol=ATOL, rtol=0)
    assert all(m.captured is None for m in (model.self_attn, model.cross_attn))
    torch.testing.assert_close(after, plain, atol=0, rtol=0)

    heat = attention_heatmaps(maps, size=(8, 12))           # 24 positions on a 4x6 grid -> resized to 8x12
    assert heat.shape == (2, 5, 8, 12)
    torch.testing.assert_close(heat.sum(1), torch.ones(2, 8, 12))  # each pixel spreads 1 over the tokens


def test_capture_self_all_and_average_heads():
    model = TwoLayers().eval()
    x, ctx = torch.randn(1, 9, 16), torch.randn(1, 5, 6)
    with torch.no_grad(), capture_attention(model, kind="self", average_heads=True) as maps:
        model(x, ctx)
    assert list(maps) == ["self_attn"] and maps["self_attn"][0].shape == (1, 1, 9, 9)
    with torch.no_grad(), capture_attention(model, kind="all", layers=lambda n: "cross" in n) as maps:
        model(x, ctx)
    assert list(maps) == ["cross_attn"]


def test_capture_bad_arguments():
    with pytest.raises(ValueError, match="kind"):
        with capture_attention(TwoLayers(), kind="both"):
            pass
    with pytest.raises(ValueError, match="no 'cross' attention"):
        with capture_attention(torch.nn.Linear(2, 2)):
            pass
    with pytest.raises(ValueError, match="no captured calls"):
        attention_heatmaps({"a": []}, size=(4, 4))
