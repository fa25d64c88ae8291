"""Decoding untrusted image bytes into plain RGB (or grayscale) pictures.

The file's name and extension are never trusted: the bytes decide the format. Odd but valid images
(CMYK, 16-bit, palette, RGBA, 1x1, a GIF named .png) decode to ordinary 8-bit RGB; anything that is not a
picture, or that would decompress into an absurd number of pixels, is refused with one sentence.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from viz_server.errors import UserError

MAX_IMAGE_PIXELS = 40_000_000
"""Largest picture accepted (width x height); a decompression bomb declares far more."""

ALLOWED_FORMATS = frozenset({"PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF", "PPM"})


def decode_image(data: bytes, name: str = "image") -> Image.Image:
    """Decode image bytes into an 8-bit RGB PIL image, refusing anything that is not a safe picture."""
    if not data:
        raise UserError(f"{name} is empty; upload a PNG or JPEG picture.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as opened:
                if opened.format not in ALLOWED_FORMATS:
                    raise UserError(f"{name} is a {opened.format} file, which is not supported; upload a PNG, JPEG, GIF, BMP, WEBP or TIFF picture.")
                width, height = opened.size
                if width * height > MAX_IMAGE_PIXELS:
                    raise UserError(f"{name} declares {width}x{height} pixels, more than the {MAX_IMAGE_PIXELS:,} allowed; downscale it first.")
                if width < 1 or height < 1:
                    raise UserError(f"{name} has no pixels; upload a real picture.")
                opened.seek(0)  # first frame of an animation
                opened.load()
                picture = ImageOps.exif_transpose(opened)
                return to_rgb(picture)
    except UserError:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise UserError(f"{name} would decompress into too many pixels; downscale it first.") from None
    except UnidentifiedImageError:
        raise UserError(f"{name} is not a picture this server can read; upload a PNG or JPEG file.") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise UserError(f"{name} is damaged or truncated ({exc}); upload the complete picture.") from None


def to_rgb(picture: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB: 16-bit is rescaled, alpha is composited on white."""
    mode = picture.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        values = np.asarray(picture, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
        if mode == "F":
            top = max(float(values.max(initial=1.0)), 1e-12)
        gray = np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(gray, "L").convert("RGB")
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in picture.info):
        rgba = picture.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode == "RGB":
        return picture.copy()
    return picture.convert("RGB")
