"""Renders lines of text into a PNG for the OCR pipeline's tests, and prints where each line's ink lies.

Usage: render_lines.py OUT.png "line one" ["line two" ...] [--size PX] [--margin PX]
Prints a JSON list of each line's true box [x0, y0, x1, y1] (ink extent, x1/y1 exclusive) in line order.

Black DejaVu Sans (Debian's fonts-dejavu-core) on white at 32 px: the recogniser reads 48 px tall crops, and
a line of 32 px text detected with its margin scales to about that, so nothing is blurred by upscaling.
"""
import argparse
import json
import sys

from PIL import Image, ImageDraw, ImageFont

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"


def render(lines, size=32, margin=24):
    font = ImageFont.truetype(FONT, size)
    probe = ImageDraw.Draw(Image.new("L", (1, 1)))
    # Lines are spaced by the font's full height plus half a line, so detection boxes never touch.
    ascent, descent = font.getmetrics()
    pitch = int((ascent + descent) * 1.5)
    widths = [probe.textbbox((0, 0), line, font=font)[2] for line in lines]
    width = max(widths, default=0) + 2 * margin
    height = pitch * len(lines) - (pitch - ascent - descent) + 2 * margin
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    boxes = []
    for i, line in enumerate(lines):
        origin = (margin, margin + i * pitch)
        draw.text(origin, line, fill="black", font=font)
        x0, y0, x1, y1 = draw.textbbox(origin, line, font=font)
        boxes.append([int(x0), int(y0), int(x1), int(y1)])
    return img, boxes


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("lines", nargs="+")
    parser.add_argument("--size", type=int, default=32, help="font size in pixels")
    parser.add_argument("--margin", type=int, default=24, help="white border in pixels")
    args = parser.parse_args(argv)
    img, boxes = render(args.lines, args.size, args.margin)
    img.save(args.out)
    print(json.dumps(boxes))


if __name__ == "__main__":
    main(sys.argv[1:])
