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
