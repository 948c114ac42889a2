"""The figures a training run writes: what is drawn, and that it is saved."""

import matplotlib
import pytest
import torch

matplotlib.use("Agg")  # no display in tests

import matplotlib.pyplot as plt  # noqa: E402

from velm_course.plots import plot_caption_grid, plot_loss_curves, plot_seed_architecture  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_loss_curves_draw_every_run_and_its_validation(tmp_path):
    histories = {
        "captioner": [{"step": 10, "loss": 3.0}, {"step": 20, "loss": 2.0, "val_loss": 2.5},
                      {"step": 30, "loss": 1.5}, {"step": 40, "loss": 1.2, "val_loss": 1.9}],
        "blind": [{"step": 10, "loss": 3.2}, {"step": 20, "loss": 2.9}],
    }
    fig = plot_loss_curves(histories, tmp_path / "loss.png")
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {"captioner (train)", "captioner (validation)", "blind (train)"}
    assert list(lines["captioner (train)"].get_xdata()) == [10, 20, 30, 40]
    assert list(lines["captioner (train)"].get_ydata()) == [3.0, 2.0, 1.5, 1.2]
    assert list(lines["captioner (validation)"].get_xdata()) == [20, 40]
    assert list(lines["captioner (validation)"].get_ydata()) == [2.5, 1.9]
    assert lines["captioner (validation)"].get_linestyle() == "--"
    # a run keeps one colour for its train and validation curves; runs differ
    assert lines["captioner (train)"].get_color() == lines["captioner (validation)"].get_color()
    assert lines["captioner (train)"].get_color() != lines["blind (train)"].get_color()
    assert ax.get_yscale() == "log"
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_caption_grid_shows_each_image_with_its_captions(tmp_path):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (5, 3, 16, 16), generator=g, dtype=torch.uint8)
    generated = [f"a red circle number {i}" for i in range(5)]
    references = [[f"reference {i}", "another"] for i in range(5)]
    fig = plot_caption_grid(images, generated, references, tmp_path / "grid.png", cols=3)
    assert len(fig.axes) == 6  # two rows of three; the sixth stays empty
    for i, ax in enumerate(fig.axes[:5]):
        (shown,) = ax.get_images()
        assert torch.equal(torch.as_tensor(shown.get_array()), images[i].permute(1, 2, 0))
        title = ax.get_title(loc="left")
        assert generated[i] in title.replace("\n", " ") and f"reference {i}" in title
    assert not fig.axes[5].get_images() and not fig.axes[5].axison
    assert (tmp_path / "grid.png").exists()


def test_seed_architecture_has_its_six_boxes():
    fig = plot_seed_architecture()
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert len(texts) == 6
    assert any(t.startswith("fusion layer") for t in texts) and any(t.startswith("vision encoder") for t in texts)
    assert len(fig.axes[0].patches) == 6 + 5  # boxes and arrows
