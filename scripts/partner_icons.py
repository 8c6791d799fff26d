"""Draw the partner app's icons (frontend/img/partner-*.png) from the logo's shapes, with Pillow.

The logo (frontend/img/logo.svg) is a white map pin on a violet-to-pink diagonal. "any" icons are
the rounded square as in the logo; maskable ones fill the whole square (launchers cut their own
shape) and keep the pin inside the central 80 % safe zone. Run: .venv/bin/python scripts/partner_icons.py
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

OUT = Path(__file__).resolve().parent.parent / "frontend" / "img"
VIOLET = (0x6D, 0x28, 0xD9)
PINK = (0xDB, 0x27, 0x77)
SUPERSAMPLE = 4  # draw large, then shrink: smooth edges without an antialiasing API


def gradient(size: int) -> Image.Image:
    """The logo's diagonal, top-left violet to bottom-right pink."""
    small = Image.new("RGB", (64, 64))
    for y in range(64):
        for x in range(64):
            t = (x + y) / 126
            small.putpixel((x, y), tuple(round(a + (b - a) * t) for a, b in zip(VIOLET, PINK, strict=True)))
    return small.resize((size, size), Image.Resampling.BICUBIC)


def pin_mask(size: int, scale: float) -> Image.Image:
    """The logo's pin (64-unit grid) scaled by `scale` about the centre, white on black."""
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    unit = size / 64 * scale
    offset = size / 2 - 32 * unit

    def at(x: float, y: float) -> tuple[float, float]:
        return offset + x * unit, offset + y * unit

    head_x, head_y, radius = 32, 26.6, 15
    draw.ellipse([at(head_x - radius, head_y - radius), at(head_x + radius, head_y + radius)], fill=255)
    # The tail meets the head along its tangents from the tip (32, 52).
    draw.polygon([at(19.9, 35.5), at(44.1, 35.5), at(32, 52)], fill=255)
    hole = 5.5
    draw.ellipse([at(head_x - hole, head_y - hole), at(head_x + hole, head_y + hole)], fill=0)
    return mask


def icon(size: int, maskable: bool) -> Image.Image:
    big = size * SUPERSAMPLE
    image = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    background = gradient(big)
    shape = Image.new("L", (big, big), 0)
    if maskable:
        shape.paste(255, (0, 0, big, big))
    else:
        ImageDraw.Draw(shape).rounded_rectangle([0, 0, big - 1, big - 1], radius=round(big * 14 / 64), fill=255)
    image.paste(background, (0, 0), shape)
    # The maskable pin shrinks so that its whole height sits inside the 80 % safe circle.
    white = Image.new("RGBA", (big, big), (255, 255, 255, 255))
    image.paste(white, (0, 0), pin_mask(big, 0.85 if maskable else 1.0))
    return image.resize((size, size), Image.Resampling.LANCZOS)


def main() -> None:
    for size in (192, 512):
        icon(size, maskable=False).save(OUT / f"partner-{size}.png", optimize=True)
        icon(size, maskable=True).convert("RGB").save(OUT / f"partner-maskable-{size}.png", optimize=True)


if __name__ == "__main__":
    main()
