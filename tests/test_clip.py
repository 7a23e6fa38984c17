"""sdlearn.clip.CLIPTextEncoder against transformers' CLIPTextModel on the same weights, and the tiny CLIP
(sdlearn.toys)."""
import pytest
import torch
import transformers

from sdlearn.clip import CLIPTextEncoder
from sdlearn.configs import CLIP_VIT_L_TEXT, OPENCLIP_VIT_H_TEXT
from sdlearn.toys import TINY_TEXT_CONFIG, TinyCLIP, contrastive_loss

# Both sides run float32 with the same operations (SDPA attention, LayerNorm, the same GELU), so
# they agree to round-off: ~1e-6 on O(1) outputs after the final LayerNorm; 1e-4 leaves room for
# a different BLAS summation order over 23 layers.
ATOL = 1e-4


def _ids(vocab_size: int, batch: int = 2, length: int = 77, eos: int | None = None, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab_size - 2, (batch, length), generator=g)
    if eos is not None:
        ids[:, 9:] = eos  # SD v1 style: end token then padding with it
    return ids


@pytest.mark.parametrize("act", ["quick_gelu", "gelu"])
def test_reduced_config_matches_transformers(act):
    config = {**TINY_TEXT_CONFIG, "vocab_size": 1000, "hidden_act": act, "max_position_embeddings": 40,
              "num_hidden_layers": 3, "bos_token_id": 998, "eos_token_id": 999, "pad_token_id": 999}
    theirs = transformers.CLIPTextModel(transformers.CLIPTextConfig(**config)).eval()
    ours = CLIPTextEncoder.from_config(config).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)  # transformers 5 keys (no "text_model.")
    ids = _ids(1000, length=40, eos=999)
    with torch.no_grad():
        out = theirs(ids, output_hidden_states=True)
        assert torch.allclose(ours(ids), out.last_hidden_state, atol=ATOL)
        assert torch.allclose(ours.pooled(ids), out.pooler_output, atol=ATOL)
        for mine, ref in zip(ours.hidden_states(ids), out.hidden_states, strict=True):
            assert torch.allclose(mine, ref, atol=ATOL)


def test_keys_are_transformers_checkpoint_keys():
    keys = set(CLIPTextEncoder.from_config({**TINY_TEXT_CONFIG, "num_hidden_layers": 1}).state_dict())
    assert "text_model.embeddings.token_embedding.weight" in keys
    assert "text_model.encoder.layers.0.self_attn.q_proj.weight" in keys
    assert "text_model.final_layer_norm.bias" in keys
    assert all(k.startswith("text_model.") for k in keys) and len(keys) == 2 + 16 + 2


@pytest.mark.parametrize("config", [CLIP_VIT_L_TEXT, OPENCLIP_VIT_H_TEXT], ids=["sd1-vit-l14", "sd2-openclip-vit-h"])
def test_stable_diffusion_text_encoders_match_transformers(config):
    torch.manual_seed(0)
    ours = CLIPTextEncoder.from_config(config).eval()
    with torch.device("meta"):  # no second random init: share our tensors
        theirs = transformers.CLIPTextModel(transformers.CLIPTextConfig(**config))
    state = {k.removeprefix("text_model."): v for k, v in ours.state_dict().items()}
    theirs.load_state_dict(state, strict=True, assign=True)
    theirs.embeddings.position_ids = torch.arange(77)[None]
    theirs.eval()
    ids = _ids(49408, batch=1, eos=49407)
    with torch.no_grad():
        mine = ours(ids)
        assert mine.shape == (1, 77, config["hidden_size"])
        assert torch.allclose(mine, theirs(ids).last_hidden_state, atol=ATOL)


def test_causal_mask_earlier_states_ignore_later_tokens():
    ours = CLIPTextEncoder.from_config({**TINY_TEXT_CONFIG, "num_hidden_layers": 2}).eval()
    a, b = _ids(49408, seed=1), _ids(49408, seed=1)
    b[:, 5:] = _ids(49408, seed=2)[:, 5:]
    with torch.no_grad():
        ha, hb = ours(a), ours(b)
    assert torch.equal(ha[:, :5], hb[:, :5])
    assert not torch.allclose(ha[:, 5:], hb[:, 5:])


def test_save_load_roundtrip_with_transformers(tmp_path):
    ours = CLIPTextEncoder.from_config({**TINY_TEXT_CONFIG, "num_hidden_layers": 2}).eval()
    ours.save_pretrained(tmp_path)
    theirs = transformers.CLIPTextModel.from_pretrained(tmp_path).eval()
    back = CLIPTextEncoder.from_pretrained(tmp_path)
    ids = _ids(49408, eos=49407)
    with torch.no_grad():
        assert torch.equal(back(ids), ours(ids))
        assert torch.allclose(theirs(ids).last_hidden_state, ours(ids), atol=ATOL)


def test_bad_config_and_folder(tmp_path):
    with pytest.raises(ValueError, match="hidden_act"):
        CLIPTextEncoder.from_config({**TINY_TEXT_CONFIG, "hidden_act": "relu6"})
    with pytest.raises(TypeError, match="config"):
        CLIPTextEncoder.from_config("openai/clip-vit-large-patch14")
    with pytest.raises(ValueError, match="safetensors"):
        CLIPTextEncoder.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="positions"):
        CLIPTextEncoder.from_config({**TINY_TEXT_CONFIG, "num_hidden_layers": 1})(_ids(49408, length=78))


def test_contrastive_loss():
    eye = torch.eye(4) * 20
    assert contrastive_loss(eye) < 1e-6 < contrastive_loss(torch.zeros(4, 4))
    assert torch.isclose(contrastive_loss(torch.zeros(4, 4)), torch.log(torch.tensor(4.0)))
    # with two true captions for image 0, splitting the mass between them is the optimum
    match = torch.eye(4, dtype=torch.bool)
    match[0, 1] = True
    logits = eye.clone()
    logits[0, 1] = 20
    assert contrastive_loss(logits, match) < contrastive_loss(eye, match)


def test_caption_matches_handles_omitted_attributes():
    from sdlearn.data import Attributes
    from sdlearn.data import parse_caption
    from sdlearn.train.clip import caption_matches

    assert parse_caption("a red circle in the top center") == (
        ({"color": "red", "shape": "circle", "position": "top center"},), "and", None)
    imgs = [Attributes("circle", "red", "small", "top left"), Attributes("circle", "red", "large", "center")]
    m = caption_matches(["a red circle", "a small red circle in the top left", "a blue star"], imgs)
    assert m.tolist() == [[True, True], [True, False], [False, False]]


def test_hard_negatives_swap_colours_and_flip_relations():
    from sdlearn.data import Scene, SceneObject
    from sdlearn.train.clip import caption_matches, hard_negatives

    scene = Scene((SceneObject("circle", "red", "small", 10, 30), SceneObject("square", "blue", "large", 50, 30)),
                  "black", "to the left of")
    neg = hard_negatives("a red circle to the left of a blue square", scene)
    assert neg == {"binding": "a blue circle to the left of a red square",
                   "relation": "a red circle to the right of a blue square"}
    assert hard_negatives("a circle and a square", scene) == {}
    assert caption_matches(list(neg.values()), [scene]).tolist() == [[False], [False]]   # both false of the image


def test_contrastive_loss_takes_extra_negative_captions():
    """(B images, B + H captions): a caption true of no image only competes in the image rows."""
    logits = torch.zeros(2, 3)
    match = torch.tensor([[True, False, False], [False, True, False]])
    base = contrastive_loss(logits[:, :2], match[:, :2])
    assert torch.isfinite(contrastive_loss(logits, match))
    assert contrastive_loss(logits, match) > base               # one more wrong caption to choose from
    confusing = logits.clone()
    confusing[0, 2] = 5.0                                       # image 0 likes the negative: a worse loss
    assert contrastive_loss(confusing, match) > contrastive_loss(logits, match)


def test_bundled_text_encoder_loads_in_transformers_and_is_small():
    from sdlearn.train.clip import TEXT_ENCODER_DIR

    assert (TEXT_ENCODER_DIR / "model.safetensors").stat().st_size <= 15e6
    ours = CLIPTextEncoder.from_pretrained(TEXT_ENCODER_DIR)
    theirs = transformers.CLIPTextModel.from_pretrained(TEXT_ENCODER_DIR).eval()
    assert theirs.dtype == torch.float32
    ids = _ids(49408, eos=49407)
    with torch.no_grad():
        assert torch.allclose(ours(ids), theirs(ids).last_hidden_state, atol=ATOL)


def test_bundled_tiny_clip_retrieves_captions():
    from sdlearn.tokenizer import CLIPTokenizer
    from sdlearn.train.clip import TEXT_ENCODER_DIR, evaluate

    model = TinyCLIP.load(TEXT_ENCODER_DIR)
    scores = evaluate(model, CLIPTokenizer(), n_batches=2, seed=123)  # 128 fresh renders
    # chance is 1/64 for retrieval, 1/9 for position: these floors catch a broken or untrained model
    assert scores["retrieval_top1"] > 0.7
    assert scores["zero_shot_position"] > 0.7


def test_training_is_reproducible_by_seed():
    from sdlearn.train.clip import train

    small = {**TINY_TEXT_CONFIG, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
             "num_attention_heads": 2, "projection_dim": 32}
    runs = [train(seed=s, steps=3, batch_size=16, pool=64, text_config=small, progress=False, log_every=10)
            for s in (0, 0, 1)]
    same = [torch.equal(a, b) for a, b in zip(runs[0].state_dict().values(), runs[1].state_dict().values())]
    assert all(same)
    assert not torch.equal(runs[0].image_encoder.head[1].weight, runs[2].image_encoder.head[1].weight)
