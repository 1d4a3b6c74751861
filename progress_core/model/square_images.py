"""Images made square the way LLaVA-1.5 trains: padded with the processor's mean colour, not cropped.

LLaVA-1.5 trains with ``image_aspect_ratio pad``: ``expand2square`` centres the image on a square of the
image processor's mean colour before the CLIP processor resizes it, so nothing of the picture is lost, and
the boxes of the grounding rows in LLaVA-665K (Visual Genome, RefCOCO), normalised to that padded square,
point where they should (docs/algorithm.md#training). ``crop`` keeps the processor's centre crop.
"""

from __future__ import annotations

from collections.abc import Sequence


def mean_colour(image_processor) -> tuple[int, int, int]:
    """The processor's normalisation mean as an RGB colour (0-255), the colour that normalises to zero."""
    mean = getattr(image_processor, "image_mean", None) or (0.5, 0.5, 0.5)
    return tuple(int(round(float(x) * 255)) for x in mean)


def expand_to_square(image, background: tuple[int, int, int]):
    """``image`` (PIL, RGB) centred on a square of ``background``, its side the image's longer side."""
    from PIL import Image

    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    square = Image.new(image.mode, (side, side), background)
    square.paste(image, ((side - width) // 2, (side - height) // 2))
    return square


def squared(images: Sequence, image_processor, aspect_ratio: str) -> list:
    """``images`` padded to squares of the mean colour for ``pad``; unchanged for ``crop``."""
    if aspect_ratio != "pad":
        return list(images)
    background = mean_colour(image_processor)
    return [expand_to_square(im, background) for im in images]
