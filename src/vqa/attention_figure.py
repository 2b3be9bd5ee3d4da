"""Attention you can see: a stacked attention network's maps drawn over the image it looked at.

A SAN weighs the S x S regions of VGG16's ``block5_pool`` grid; region (r, c) is the
square of the image, as the CNN saw it (square-resized to the model's ``image_size``),
that lies r / S from the top and c / S from the left. Each map is upsampled to the
image with bilinear interpolation between region centres, so the picture shows a
smooth glow rather than blocks, and laid over the image with a colour map whose
opacity grows with the attention, normalised by the map's peak: the regions a layer
ignores show the image untouched.

``vqa ask --attention out.png`` writes :func:`save_attention_figure`'s picture
(:func:`ask_with_attention_figure`); the
web page in ``serving/`` draws the same overlay (peak-normalised opacity, bilinear
smoothing) with a canvas. matplotlib is imported only when a figure is drawn, with the
Agg canvas (no display, no pyplot state), so a threaded server may draw too.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vqa.atomic import write_atomically
from vqa.errors import InputError

COLORMAP = "inferno"
DEFAULT_ALPHA = 0.75  # opacity of the overlay at the map's peak
# Figure geometry in pixels (at DPI), fixed so that every panel's image lands on known pixels.
DPI = 100
PANEL_PIXELS = 256
GAP_PIXELS = 16
TITLE_PIXELS = 56
LABEL_PIXELS = 26


def upsample_attention(attention_map: np.ndarray, height: int, width: int) -> np.ndarray:
    """Upsample one attention map to an image's size, bilinear between region centres.

    Region (r, c)'s value sits at the centre of its cell, pixel
    ((r + 0.5) * height / S, (c + 0.5) * width / S); beyond the outer centres it is held.

    Args:
        attention_map: float (S, S), row 0 = the top of the image.
        height: H, image rows.
        width: W, image columns.
    Returns:
        float32 (H, W).
    """
    attention_map = np.asarray(attention_map, dtype=np.float32)
    rows = _interpolation_matrix(attention_map.shape[0], height)
    columns = _interpolation_matrix(attention_map.shape[1], width)
    return (rows @ attention_map @ columns.T).astype(np.float32)


def _interpolation_matrix(cells: int, pixels: int) -> np.ndarray:
    """float32 (pixels, cells): linear weights of each cell centre for each pixel centre."""
    position = np.clip((np.arange(pixels) + 0.5) * cells / pixels - 0.5, 0, cells - 1)
    below = np.floor(position).astype(int)
    above = np.minimum(below + 1, cells - 1)
    weight = (position - below).astype(np.float32)
    matrix = np.zeros((pixels, cells), np.float32)
    np.add.at(matrix, (np.arange(pixels), below), 1 - weight)
    np.add.at(matrix, (np.arange(pixels), above), weight)
    return matrix


def overlay_attention(image: np.ndarray, attention_map: np.ndarray, *, alpha: float = DEFAULT_ALPHA,
                      colormap: str = COLORMAP) -> np.ndarray:
    """Blend one attention map over an image: colour and opacity grow with the peak-normalised map.

    Args:
        image: uint8 or float (H, W, 3) RGB in [0, 255], the image as the CNN saw it.
        attention_map: float (S, S) attention over the grid (any non-negative scale).
        alpha: opacity at the map's peak, in [0, 1].
        colormap: a matplotlib colour map name.
    Returns:
        uint8 (H, W, 3): ``image * (1 - w) + colour * w`` with w = alpha * map / max(map),
        upsampled bilinearly (a map of zeros leaves the image as it is).
    """
    from matplotlib import colormaps

    image = _checked_image(image)
    attention_map = _checked_maps(np.asarray(attention_map)[None])[0]
    level = upsample_attention(attention_map, *image.shape[:2])
    peak = float(level.max())
    level = np.clip(level / peak, 0, 1) if peak > 0 else np.zeros_like(level)
    colour = colormaps[colormap](level)[..., :3] * 255
    weight = (alpha * level)[..., None]
    return np.clip(np.rint(image * (1 - weight) + colour * weight), 0, 255).astype(np.uint8)


def panel_boxes(num_layers: int) -> list[tuple[int, int, int, int]]:
    """Where each panel's picture lies in :func:`save_attention_figure`'s PNG.

    Args:
        num_layers: L, attention layers (the figure has L + 1 panels: the image, then one per layer).
    Returns:
        L + 1 (left, top, right, bottom) pixel boxes, left to right.
    """
    top = TITLE_PIXELS + LABEL_PIXELS
    return [(GAP_PIXELS + i * (PANEL_PIXELS + GAP_PIXELS), top,
             GAP_PIXELS + i * (PANEL_PIXELS + GAP_PIXELS) + PANEL_PIXELS, top + PANEL_PIXELS)
            for i in range(num_layers + 1)]


def figure_size(num_layers: int) -> tuple[int, int]:
    """(width, height) in pixels of :func:`save_attention_figure`'s PNG for ``num_layers`` maps."""
    panels = num_layers + 1
    return panels * (PANEL_PIXELS + GAP_PIXELS) + GAP_PIXELS, TITLE_PIXELS + LABEL_PIXELS + PANEL_PIXELS + GAP_PIXELS


def save_attention_figure(path: Path, image: np.ndarray, attention: np.ndarray, *, question: str,
                          answers: Sequence[tuple[str, float]], alpha: float = DEFAULT_ALPHA,
                          colormap: str = COLORMAP) -> None:
    """Write a PNG: the image as the CNN saw it, then each layer's attention over it, atomically.

    The figure is titled with the question and the top answer; each layer's panel gives
    its peak weight beside the uniform 1 / S^2, a measure of how focused it is.

    Args:
        path: Path of the PNG file to write (its folder is created).
        image: uint8 or float (H, W, 3) RGB in [0, 255], square-resized as the CNN saw it
            (``vqa.features.load_image(path, size=image_size)``), so the grid aligns.
        attention: float (L, S, S), each layer's attention (``Predictor.ask_with_attention``).
        question: the question asked.
        answers: (answer, probability) pairs, most probable first; the first one is in the title.
        alpha: overlay opacity at each map's peak.
        colormap: a matplotlib colour map name.
    Raises:
        InputError: an image that is not (H, W, 3), maps that are not (L, S, S), no answers.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    image = _checked_image(image)
    attention = _checked_maps(attention)
    if not answers:
        raise InputError("no answers to title the attention figure with")
    width, height = figure_size(len(attention))
    figure = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    FigureCanvasAgg(figure)
    answer, probability = answers[0]
    title = f'"{" ".join(question.split())}"  ->  {answer} ({100 * probability:.1f}%)'
    figure.text(0.5, 1 - 0.5 * TITLE_PIXELS / height, textwrap.fill(title, max(20, width // 8)),
                ha="center", va="center", fontsize=11)
    pictures = [np.clip(np.rint(image), 0, 255).astype(np.uint8)]
    pictures += [overlay_attention(image, layer, alpha=alpha, colormap=colormap) for layer in attention]
    uniform = 1 / attention[0].size
    labels = [f"image ({image.shape[1]}x{image.shape[0]}, as the CNN saw it)"] + [
        f"layer {i + 1}: peak {layer.max():.2f} (uniform {uniform:.3f})" for i, layer in enumerate(attention)]
    for picture, label, box in zip(pictures, labels, panel_boxes(len(attention))):
        axes = figure.add_axes(_axes_rectangle(box, width, height))
        axes.imshow(picture, extent=(0, picture.shape[1], picture.shape[0], 0), aspect="auto",
                    interpolation="bilinear")
        axes.set_title(label, fontsize=8, pad=4)
        axes.set_axis_off()
    write_atomically(Path(path), lambda temporary: figure.savefig(temporary, format="png", dpi=DPI))


def ask_with_attention_figure(predictor, image: Path, question: str, *, out: Path, top: int = 5):
    """Answer a question with a SAN and write its attention over the image to a PNG.

    The image is drawn as the CNN saw it: square-resized to the model's ``image_size``.

    Args:
        predictor: a :class:`vqa.predict.Predictor` over a model with attention, with a CNN.
        image: the image file.
        question: the question text.
        out: Path of the PNG to write (:func:`save_attention_figure`).
        top: answers to return, 1..K.
    Returns:
        ``top`` (answer, probability) pairs, most probable first.
    Raises:
        InputError: the model has no attention (train one with ``vqa train san``), or a bad image.
    """
    from vqa.features import load_image

    answers, attention = predictor.ask_with_attention(image, question, top=top)
    save_attention_figure(out, load_image(image, size=predictor.images.image_size), attention, question=question,
                          answers=answers)
    return answers


def _axes_rectangle(box: tuple[int, int, int, int], width: int, height: int) -> list[float]:
    """A pixel box (left, top, right, bottom) as matplotlib's [left, bottom, width, height] fractions."""
    left, top, right, bottom = box
    return [left / width, 1 - bottom / height, (right - left) / width, (bottom - top) / height]


def _checked_image(image) -> np.ndarray:
    """float32 (H, W, 3) in [0, 255], or InputError."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3 or image.shape[2] != 3 or not image.shape[0] or not image.shape[1]:
        raise InputError(f"the image must be an RGB (H, W, 3) array, got shape {image.shape}")
    return image


def _checked_maps(attention) -> np.ndarray:
    """float32 (L, S, S) finite, non-negative maps, or InputError."""
    attention = np.asarray(attention, dtype=np.float32)
    if attention.ndim != 3 or not attention.shape[0] or attention.shape[1] != attention.shape[2] \
            or not attention.shape[1]:
        raise InputError(f"attention must be (layers, S, S) maps over a square grid, got shape {attention.shape}")
    if not np.isfinite(attention).all() or (attention < 0).any():
        raise InputError("attention maps must be finite and non-negative")
    return attention
