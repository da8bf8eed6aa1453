"""Whisper-MLA attention and conversion on the real tiny.en and real speech.

Exactness at full rank, absorbed == naive decoding, what the cache really holds, beam search
and batching through `generate`, the exact cache-free cross-attention, masks, dtypes.
"""
from __future__ import annotations

import copy

import pytest
import torch
from transformers.cache_utils import DynamicCache, EncoderDecoderCache

from engine.mla import ExactCrossAttention, MLAAttention, convert_model, kv_cache_bytes, set_attention_path
from engine.mla.calibrate import features_for_files
from engine.mla.decode import decode_prompt, greedy_decode, new_cache

CLIPS = ("1089-134691-0000.flac", "3080-5032-0003.flac")  # 2.1 s and 4.0 s of LibriSpeech
TOL = 1e-4


@pytest.fixture(scope="module")
def stock(tiny):
    return tiny.model


@pytest.fixture(scope="module")
def feats(data_dir, stock):
    return features_for_files([data_dir / c for c in CLIPS], n_mels=stock.config.num_mel_bins)


@pytest.fixture(scope="module")
def enc(stock, feats):
    with torch.inference_mode():
        return stock.model.encoder(feats).last_hidden_state


@pytest.fixture(scope="module")
def reference(stock, feats, enc):
    return greedy_decode(stock, feats, keep_logits=True, encoder_output=enc)


def converted(stock, **kw):
    model = copy.deepcopy(stock)
    convert_model(model, **kw)
    return model


def max_step_diff(a, b) -> float:
    assert len(a.step_logits) == len(b.step_logits)
    return max(float((x - y).abs().max()) for x, y in zip(a.step_logits, b.step_logits))


def test_reference_transcript_is_real_speech(tiny, reference):
    text = tiny.tokenizer.decode(reference.tokens[1], skip_special_tokens=True).lower()
    assert "news" in text and "garland" in text  # "WHY DID YOU NOT SEND ME THAT NEWS AND A GARLAND"


@pytest.mark.parametrize("init", ["svd", "calibrated"])
@pytest.mark.parametrize("path", ["naive", "absorbed"])
def test_full_rank_equals_stock(stock, feats, enc, reference, init, path):
    d = stock.config.d_model
    model = converted(stock, rank=d, init=init, calibration_features=feats)
    set_attention_path(model, path)
    out = greedy_decode(model, feats, keep_logits=True, encoder_output=enc)
    assert out.tokens == reference.tokens
    assert max_step_diff(out, reference) < TOL


@pytest.mark.parametrize("absorb", ["fused", "factored"])
def test_absorbed_equals_naive_at_low_rank(stock, feats, enc, absorb):
    model = converted(stock, kv_reduction=0.875, init="svd")
    set_attention_path(model, "naive")
    naive = greedy_decode(model, feats, keep_logits=True, encoder_output=enc, max_new_tokens=24)
    set_attention_path(model, "absorbed", absorb)
    fast = greedy_decode(model, feats, keep_logits=True, encoder_output=enc, max_new_tokens=24)
    assert fast.tokens == naive.tokens
    assert max_step_diff(fast, naive) < TOL


def test_cache_holds_only_the_latent(stock, feats, enc):
    d, r = stock.config.d_model, 96
    model = converted(stock, rank=r, init="svd")
    cache = new_cache()
    ids = torch.tensor([decode_prompt(model)] * 2)
    with torch.inference_mode():
        for _ in range(5):
            out = model.model.decoder(input_ids=ids, encoder_hidden_states=enc, cache=cache, use_cache=True)
            ids = model.proj_out(out.last_hidden_state[:, -1]).argmax(-1)[:, None]
    t = len(decode_prompt(model)) + 4
    for layer in cache.self_attention_cache.layers:
        assert tuple(layer.keys.shape) == (2, 1, t, r)
        assert layer.values.numel() == 0
    got = kv_cache_bytes(cache)
    n_layers = stock.config.decoder_layers
    assert got.self_attn == n_layers * 2 * t * r * 4
    assert got.cross_attn == n_layers * 2 * enc.shape[1] * 2 * d * 4  # cross-attention still stock
    stock_self = n_layers * 2 * t * 2 * d * 4
    assert got.self_attn * 2 * d == stock_self * r  # exactly r / 2d of stock


def test_kv_cache_bytes_of_stock_cache(stock, enc, reference):
    d, n_layers = stock.config.d_model, stock.config.decoder_layers
    t = len(decode_prompt(stock)) + max(len(x) for x in reference.tokens)
    got = reference.kv
    assert got.self_attn == n_layers * 2 * t * 2 * d * 4
    assert got.cross_attn == n_layers * 2 * enc.shape[1] * 2 * d * 4
    assert kv_cache_bytes(None).total == 0
    assert kv_cache_bytes(DynamicCache()).total == 0


def test_generate_beam5_and_batch_match_naive(stock, feats):
    model = converted(stock, kv_reduction=0.875, init="svd")
    runs = {}
    for path in ("naive", "absorbed"):
        set_attention_path(model, path)
        with torch.inference_mode():
            runs[path] = (model.generate(feats[:1], num_beams=5, max_new_tokens=12),
                          model.generate(feats, max_new_tokens=12))
    assert torch.equal(runs["naive"][0], runs["absorbed"][0])  # beam search (5 rows, reordered cache)
    assert torch.equal(runs["naive"][1], runs["absorbed"][1])  # greedy, batch 2


def test_generate_full_rank_matches_stock_beam5(stock, feats):
    model = converted(stock, rank=stock.config.d_model, init="svd", exact_cross=True)
    with torch.inference_mode():
        want = stock.generate(feats[:1], num_beams=5, max_new_tokens=12)
        got = model.generate(feats[:1], num_beams=5, max_new_tokens=12)
    assert torch.equal(want, got)


def test_exact_cross_equals_stock_and_caches_nothing(stock, feats, enc, reference):
    model = converted(stock, modules=(), exact_cross=True)
    assert all(isinstance(layer.encoder_attn, ExactCrossAttention) for layer in model.model.decoder.layers)
    out = greedy_decode(model, feats, keep_logits=True, encoder_output=enc)
    assert out.tokens == reference.tokens
    assert max_step_diff(out, reference) < TOL
    assert out.kv.cross_attn == 0 and out.kv.self_attn == reference.kv.self_attn


def test_exact_cross_shared_encoder_output(stock, enc):
    """Beams need not repeat the encoder output: (n, S, d) for n*g rows, or an expanded view."""
    attn = ExactCrossAttention.like(stock.model.decoder.layers[2].encoder_attn)
    ref_attn = stock.model.decoder.layers[2].encoder_attn
    x = torch.randn(6, 3, stock.config.d_model)
    with torch.inference_mode():
        want = ref_attn(x, key_value_states=enc.repeat_interleave(3, 0))[0]  # 2 windows x 3 beams
        grouped = attn(x, key_value_states=enc)[0]
        one = ref_attn(x, key_value_states=enc[:1].repeat_interleave(6, 0))[0]
        shared = attn(x, key_value_states=enc[:1])[0]
        view = attn(x, key_value_states=enc[:1].expand(6, -1, -1))[0]
    assert torch.allclose(grouped, want, atol=TOL)
    assert torch.allclose(shared, one, atol=TOL) and torch.allclose(view, one, atol=TOL)


def test_decoder_takes_unrepeated_encoder_output_with_exact_cross(stock, enc):
    from engine.mla import shares_encoder_output

    model = converted(stock, modules=(), exact_cross=True)
    assert shares_encoder_output(model) and not shares_encoder_output(stock)
    ids = torch.tensor([decode_prompt(model)] * 6)
    with torch.inference_mode():
        want = stock.model.decoder(input_ids=ids, encoder_hidden_states=enc.repeat_interleave(3, 0)).last_hidden_state
        got = model.model.decoder(input_ids=ids, encoder_hidden_states=enc, cache=new_cache()).last_hidden_state
    assert torch.allclose(got, want, atol=TOL)


def _rand_mla(stock, rank=48, impl="sdpa"):
    attn = stock.model.decoder.layers[1].self_attn
    cfg = copy.deepcopy(stock.config)
    cfg._attn_implementation = impl
    mla = MLAAttention(attn.embed_dim, attn.num_heads, rank, is_decoder=True, is_causal=True, layer_idx=0, config=cfg)
    torch.manual_seed(0)
    for p in mla.parameters():
        torch.nn.init.normal_(p, std=0.05)
    return mla.eval()


# transformers hands eager attention additive float masks only, so eager is not paired with the others
@pytest.mark.parametrize("impl, mask_kind", [("sdpa", "none"), ("sdpa", "bool"), ("sdpa", "float"), ("eager", "float")])
def test_masks_prefill_then_steps(stock, impl, mask_kind):
    """Prefill of several tokens, a multi-token step with past, then single steps; padding masks."""
    mla = _rand_mla(stock, impl=impl)
    d = mla.embed_dim
    xs = [torch.randn(2, n, d) for n in (4, 3, 1, 1)]
    keep = torch.ones(2, 9, dtype=torch.bool)
    keep[1, 2] = False  # a masked key in row 1 (no query row is fully masked)
    outs = {}
    for path in ("naive", "absorbed"):
        mla.path = path
        cache, past, res = EncoderDecoderCache(DynamicCache(), DynamicCache()), 0, []
        for x in xs:
            t = x.shape[1]
            causal = torch.ones(t, past + t, dtype=torch.bool).tril(past)
            mask = None
            if mask_kind != "none":
                m = (causal[None] & keep[:, None, : past + t])[:, None]
                mask = m if mask_kind == "bool" else torch.zeros(m.shape).masked_fill(~m, torch.finfo(torch.float32).min)
            elif t > 1 and past > 0:
                mask = causal[None, None].expand(2, 1, t, past + t)  # transformers never skips this case
            with torch.inference_mode():
                res.append(mla(x, cache=cache, attention_mask=mask)[0])
            past += t
        outs[path] = torch.cat(res, 1)
    assert torch.allclose(outs["naive"], outs["absorbed"], atol=TOL)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_absorbed_close_to_naive(stock, dtype):
    mla = _rand_mla(stock).to(dtype)
    x = torch.randn(2, 5, mla.embed_dim, dtype=dtype)
    outs = {}
    for path in ("naive", "absorbed"):
        mla.path = path
        with torch.inference_mode():
            outs[path] = mla(x, cache=EncoderDecoderCache(DynamicCache(), DynamicCache()))[0].float()
    assert outs["absorbed"].dtype == torch.float32 and torch.isfinite(outs["absorbed"]).all()
    assert torch.allclose(outs["naive"], outs["absorbed"], atol=3e-2, rtol=3e-2)


def test_absorbed_weights_follow_weight_changes(stock):
    mla = _rand_mla(stock)
    x = torch.randn(1, 3, mla.embed_dim)

    def both():
        res = {}
        for path in ("naive", "absorbed"):
            mla.path = path
            with torch.inference_mode():
                res[path] = mla(x, cache=EncoderDecoderCache(DynamicCache(), DynamicCache()))[0]
        return res

    before = both()
    with torch.no_grad():
        mla.k_up.weight.mul_(1.5)
        mla.v_up.bias.add_(0.1)
    after = both()
    assert torch.allclose(after["naive"], after["absorbed"], atol=TOL)
    assert not torch.allclose(before["absorbed"], after["absorbed"], atol=TOL)


def test_cross_latent_and_encoder_self_conversion(stock, feats, enc, reference):
    """Full-rank MLA for cross-attention (cached latent) and encoder self-attention is exact too."""
    d = stock.config.d_model
    model = converted(stock, rank=d, modules=("cross", "encoder-self"), init="svd")
    out = greedy_decode(model, feats, keep_logits=True)
    assert out.tokens == reference.tokens
    assert max_step_diff(out, reference) < 5 * TOL
    assert out.kv.cross_attn * 2 == reference.kv.cross_attn  # r = d: half of stock's K+V


def test_convert_rejects_bad_requests(stock):
    with pytest.raises(ValueError):
        convert_model(copy.deepcopy(stock), modules=("decoder-self",), init="svd")  # no rank
    with pytest.raises(ValueError):
        convert_model(copy.deepcopy(stock), rank=8, modules=("cross",), exact_cross=True, init="svd")
    model = converted(stock, rank=8, init="svd")
    with pytest.raises(ValueError):
        convert_model(model, rank=8, init="svd")  # already converted


@pytest.mark.parametrize("batch", [1, 3])
def test_per_head_matmul_is_the_broadcast_product(batch):
    """The absorbed paths' per-head product equals torch.matmul's broadcast, on the layouts they pass."""
    from engine.mla.heads import per_head_matmul

    g = torch.Generator().manual_seed(batch)
    h, t, k, n = 4, 2, 8, 5
    x = torch.randn(batch, t, h, k, generator=g).transpose(1, 2)  # (b, h, t, k) as a view, like q
    w = torch.randn(h, n, k, generator=g).transpose(1, 2)  # (h, k, n) as a transposed view, like W_v^T
    expected = torch.matmul(x, w)
    assert torch.allclose(per_head_matmul(x, w).transpose(0, 1), expected, atol=1e-6)
    assert torch.allclose(per_head_matmul(x, w, alpha=0.125).transpose(0, 1), 0.125 * expected, atol=1e-6)
