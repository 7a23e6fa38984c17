"""The Shapes world: every attribute renders, seeds decide pixels, captions, held-out pairs, errors."""
import numpy as np
import pytest
import torch
from PIL import Image

from sdlearn import data
from sdlearn.data import COLORS, HELD_OUT, POSITIONS, SHAPES, SIZES


def _foreground(img: Image.Image) -> np.ndarray:
    """Boolean mask of pixels clearly unlike the background."""
    a = np.asarray(img, dtype=float)
    return np.linalg.norm(a - np.array(data.BACKGROUND), axis=-1) > 60


def test_vocabulary_as_specified():
    assert len(SHAPES) >= 5 and len(COLORS) >= 6 and len(SIZES) == 2 and len(POSITIONS) == 9
    words = " ".join(POSITIONS).split()
    assert set(words) <= {"top", "bottom", "left", "right", "center"}
    assert all((s, c) in {(s2, c2) for s2 in SHAPES for c2 in COLORS} for s, c in HELD_OUT)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("size", SIZES)
def test_every_shape_and_size_renders(shape, size):
    img = data.render(shape, "red", size, "center", seed=0)
    assert img.mode == "RGB" and img.size == (64, 64)
    assert 40 < _foreground(img).sum() < 1000


def test_large_is_larger_than_small_for_every_shape():
    for shape in SHAPES:
        small = _foreground(data.render(shape, "blue", "small", "center")).sum()
        large = _foreground(data.render(shape, "blue", "large", "center")).sum()
        assert large > 2 * small, shape


def test_colors_are_drawn_in_their_palette_colour():
    for color in COLORS:
        img = np.asarray(data.render("circle", color, "large", "center"), dtype=float)
        center = img[28:36, 28:36].reshape(-1, 3).mean(0)
        assert np.abs(center - np.array(data.RGB[color])).max() < 2, color


def test_positions_put_the_shape_in_their_cell():
    for i, position in enumerate(POSITIONS):
        mask = _foreground(data.render("square", "green", "small", position, seed=i))
        ys, xs = np.nonzero(mask)
        row, col = divmod(i, 3)
        assert int(xs.mean() // (64 / 3)) == col and int(ys.mean() // (64 / 3)) == row, position


def test_antialiased_edges():
    """Supersampled drawing leaves intermediate colours along the edge."""
    a = np.asarray(data.render("circle", "red", "large", "center"), dtype=float)
    d = np.linalg.norm(a - np.array(data.BACKGROUND), axis=-1)
    full = np.linalg.norm(np.array(data.RGB["red"]) - np.array(data.BACKGROUND))
    assert ((d > 0.1 * full) & (d < 0.9 * full)).sum() > 20


def test_render_is_deterministic_by_seed():
    a = np.asarray(data.render("star", "purple", "large", "top left", seed=7))
    b = np.asarray(data.render("star", "purple", "large", "top left", seed=7))
    c = np.asarray(data.render("star", "purple", "large", "top left", seed=8))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_dataset_is_deterministic_and_in_range():
    ds1, ds2 = data.ShapesDataset(50, seed=3), data.ShapesDataset(50, seed=3)
    other = data.ShapesDataset(50, seed=4)
    x1, t1 = ds1[10]
    x2, t2 = ds2[10]
    assert x1.shape == (3, 64, 64) and x1.dtype == torch.float32
    assert -1 <= x1.min() and x1.max() <= 1
    assert torch.equal(x1, x2) and t1 == t2
    assert any(not torch.equal(ds1[i][0], other[i][0]) for i in range(5))
    with pytest.raises(IndexError):
        ds1[50]


def test_canonical_caption():
    assert data.caption("circle", "red", "small", "top left") == "a small red circle in the top left"
    assert data.caption("star", "blue") == "a blue star"
    assert data.Attributes("square", "green", "large", "center").caption() == "a large green square in the center"


def test_dataset_captions_name_the_rendered_attributes():
    ds = data.ShapesDataset(300, seed=1, varied=True)
    captions = set()
    for i in range(300):
        _, text = ds[i]
        a = ds.attributes(i)
        assert a.shape in text and a.color in text, (text, a)
        captions.add(text.replace(a.shape, "S").replace(a.color, "C").replace(a.size, "Z")
                     .replace(a.position, "P"))
    assert len(captions) >= 6, "captions should vary in wording"
    canonical = data.ShapesDataset(20, seed=1, varied=False)
    for i in range(20):
        assert canonical[i][1] == canonical.attributes(i).caption()


def test_held_out_pairs_never_in_training_data():
    ds = data.ShapesDataset(5000, seed=0, holdout=True)
    pairs = {(a.shape, a.color) for a in map(ds.attributes, range(len(ds)))}
    assert not pairs & set(HELD_OUT)
    assert len(pairs) == len(SHAPES) * len(COLORS) - len(HELD_OUT)   # every other pair appears
    everything = data.ShapesDataset(5000, seed=0, holdout=False)
    seen = {(a.shape, a.color) for a in map(everything.attributes, range(len(everything)))}
    assert set(HELD_OUT) <= seen


@pytest.mark.parametrize("field, kwargs", [
    ("shape", dict(shape="hexagon")), ("color", dict(color="pink")),
    ("size", dict(size="medium")), ("position", dict(position="middle")),
])
def test_unknown_attribute_names_allowed_values(field, kwargs):
    args = dict(shape="circle", color="red", size="small", position="center") | kwargs
    allowed = {"shape": SHAPES, "color": COLORS, "size": SIZES, "position": POSITIONS}[field]
    with pytest.raises(ValueError, match=field) as err:
        data.render(**args)
    assert all(v in str(err.value) for v in allowed)
    with pytest.raises(ValueError, match=field):
        data.caption(**args)


def test_tensor_round_trip():
    img = data.render("diamond", "orange", "large", "bottom right", seed=2)
    assert np.array_equal(np.asarray(data.to_pil(data.to_tensor(img))), np.asarray(img))


@pytest.mark.parametrize("name", data.PHOTOS)
def test_sample_photos_load_offline(name):
    img = data.sample_photo(name)
    assert img.mode == "RGB" and min(img.size) >= 256


def test_unknown_photo():
    with pytest.raises(ValueError, match="chelsea"):
        data.sample_photo("mona_lisa")
