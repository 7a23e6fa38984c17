"""The Shapes attribute reader: each reader >= 99% on real renders it never saw, robust to the
degradations generated images show, and honest errors; PSNR against its definition."""
import math

import pytest
import torch

from sdlearn import data, evaluate
from sdlearn.train.reader import augment, render_batch

N = 300  # renders per check: at 99% accuracy the chance of a spurious failure is small and the test stays fast


@pytest.fixture(scope="module")
def renders():
    # seed 777 is neither the reader's training pool (seed 0) nor its validation set (seed 10000)
    return render_batch(N, seed=777)


@pytest.fixture(scope="module")
def read(renders):
    return evaluate.read_attributes(renders[0])


@pytest.mark.parametrize("attribute", evaluate.ATTRIBUTES)
def test_each_reader_at_least_99_percent_on_renders(renders, read, attribute):
    acc = evaluate.attribute_accuracy(read, renders[1])
    assert acc[attribute] >= 0.99, acc


def test_reader_robust_to_generated_image_artifacts(renders):
    """Blur, noise, colour shifts and background blotches (the training augmentations, at the
    strength used in training) cost at most a few percent."""
    x, attrs = renders
    acc = evaluate.attribute_accuracy(augment(x, torch.Generator().manual_seed(1)), attrs)
    assert acc["all"] >= 0.95, acc


def test_reader_reads_held_out_combinations_and_pil_input():
    imgs, attrs = [], []
    for i, (shape, color) in enumerate(data.HELD_OUT):
        for size in data.SIZES:
            a = data.Attributes(shape, color, size, data.POSITIONS[(3 * i + len(size)) % 9])
            imgs.append(data.render(a.shape, a.color, a.size, a.position, seed=i))
            attrs.append(a)
    assert evaluate.read_attributes(imgs) == attrs


def test_accuracy_counts_mismatches():
    a = data.Attributes("circle", "red", "small", "center")
    img = data.to_tensor(data.render(*a.__dict__.values(), seed=0))[None].repeat(4, 1, 1, 1)
    wrong = [a, data.Attributes("star", "red", "small", "center"),
             data.Attributes("circle", "blue", "small", "center"), data.Attributes("circle", "red", "large", "top left")]
    acc = evaluate.attribute_accuracy(img, wrong)
    assert acc == {"shape": 0.75, "color": 0.75, "size": 0.75, "position": 0.75, "all": 0.25}


def test_size_threshold_separates_the_rendered_radii():
    small, large = max(data.RADIUS["small"] * 1.1, 8.8), data.RADIUS["large"] * 0.92
    assert small < evaluate.size_threshold() < large


def test_bad_input():
    with pytest.raises(ValueError, match="64"):
        evaluate.read_attributes(torch.zeros(2, 3, 32, 32))
    with pytest.raises(TypeError, match="images"):
        evaluate.read_attributes("a red circle")
    with pytest.raises(ValueError, match="match"):
        evaluate.attribute_accuracy(torch.zeros(2, 3, 64, 64), [data.Attributes("circle", "red", "small", "center")])


def test_psnr_definition():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 3, 8, 8, generator=g) * 2 - 1
    b = a + 0.1 * torch.randn(a.shape, generator=g)
    mse = ((a - b) ** 2).mean().item()
    assert math.isclose(evaluate.psnr(a, b), 10 * math.log10(4 / mse), rel_tol=1e-5)
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., :4, :] = 1                            # top half only
    mse_top = ((a - b)[..., :4, :] ** 2).mean().item()
    assert math.isclose(evaluate.psnr(a, b, mask=mask), 10 * math.log10(4 / mse_top), rel_tol=1e-5)
    assert evaluate.psnr(a, a) > 100
    with pytest.raises(ValueError, match="shape"):
        evaluate.psnr(a, b[:1])
    with pytest.raises(ValueError, match="mask"):
        evaluate.psnr(a, b, mask=torch.zeros(1, 1, 8, 8))


def test_reader_answers_for_any_image():
    """A blank or pure-noise image (a failed generation) still gets a valid reading, no crash."""
    blank = torch.full((1, 3, 64, 64), 0.9)
    noise = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    for a in evaluate.read_attributes(torch.cat([blank, noise])):
        assert a.shape in data.SHAPES and a.color in data.COLORS
        assert a.size in data.SIZES and a.position in data.POSITIONS


# sdlearn.viz: the grid helpers the notebooks use to show what the reader reads


def test_image_grid_layout_and_captions():
    from sdlearn import viz

    imgs = [data.render("circle", c, "small", "center") for c in data.COLORS[:5]]
    grid = viz.image_grid(imgs, nrow=3, scale=2, pad=2)
    assert grid.size == (3 * 128 + 4 * 2, 2 * 128 + 3 * 2)
    assert grid.getpixel((2 + 64, 2 + 64)) == imgs[0].getpixel((32, 32))      # first tile, upscaled
    tensors = torch.stack([data.to_tensor(im) for im in imgs])
    assert viz.image_grid(tensors, nrow=3, scale=2, pad=2).tobytes() == grid.tobytes()
    fig = viz.image_grid(imgs, captions=[c for c in data.COLORS[:5]])
    assert [ax.get_title() for ax in fig.axes[:5]] == list(data.COLORS[:5])
    with pytest.raises(ValueError, match="captions"):
        viz.image_grid(imgs, captions=["one"])


def test_plot_attention_maps_checks_shapes():
    from sdlearn import viz

    img = data.render("star", "red", "large", "center")
    fig = viz.plot_attention_maps(img, torch.rand(2, 8, 8), ["red", "star"])
    assert len(fig.axes) == 3 and fig.axes[2].get_title() == "star"
    with pytest.raises(ValueError, match="tokens"):
        viz.plot_attention_maps(img, torch.rand(2, 8, 8), ["red"])
    with pytest.raises(ValueError, match=r"\(T, h, w\)"):
        viz.plot_attention_maps(img, torch.rand(8, 8), ["red"])


def test_save_figure_writes_only_where_the_folder_exists(tmp_path):
    import matplotlib.pyplot as plt

    from sdlearn import viz

    fig, ax = plt.subplots(figsize=(1, 1))
    ax.plot([0, 1], [1, 0])
    viz.save_figure(fig, "line.png", tmp_path)
    assert (tmp_path / "line.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    viz.save_figure(fig, "line.png", tmp_path / "missing")                     # e.g. on Colab: no images/
    assert not (tmp_path / "missing").exists()
    plt.close(fig)
