"""Decoding untrusted image bytes into plain RGB (or grayscale) pictures.

The file's name and extension are never trusted: the bytes decide the format. Odd but valid images
(CMYK, 16-bit, palette, RGBA, 1x1, a GIF named .png) decode to ordinary 8-bit RGB; anything that is not a
picture, or that would decompress into an absurd number of pixels, is refused with one sentence.
"""

from __future__ import annotations

import ctypes
import io
import threading
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from viz_server.errors import UserError

MAX_IMAGE_PIXELS = 40_000_000
"""Largest picture accepted (width x height); a decompression bomb declares far more."""

ALLOWED_FORMATS = frozenset({"PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF", "PPM"})


DECODE_SLOTS = threading.BoundedSemaphore(2)
"""Full-size decodes at once in one process: a server's 16 request threads decoding the largest pictures together
would need 16 times the memory of one."""

REDUCIBLE_MODES = frozenset({"L", "LA", "RGB", "RGBA", "RGBX", "CMYK", "I", "F"})
"""Modes ``Image.reduce`` takes as they are."""

TRIM_FROM_PIXELS = 4_000_000
"""Pictures this large or larger hand their freed memory back after decoding (``_release_memory``); a set of small
pictures does not pay for a heap walk each."""

ROWS_PER_STEP = 512
"""Rows converted at a time from a 16-bit or float picture, so the conversion needs a slice, not a copy, of it."""


def decode_image(data: bytes, name: str = "image", fit: tuple[int, int] | None = None) -> Image.Image:
    """Decode image bytes into an 8-bit RGB PIL image, refusing anything that is not a safe picture.

    ``fit`` (height, width): the size the picture will be used at. A picture more than twice that on both sides is
    decoded reduced (JPEG: at 1/2, 1/4 or 1/8 scale by the decoder itself; others: box-reduced right after decoding),
    never below twice ``fit``, so the memory a job needs follows the model's input size, not the file's. The
    picture's full (width, height), as shown, is in ``info["full_size"]``."""
    if not data:
        raise UserError(f"{name} is empty; upload a PNG or JPEG picture.")
    width = height = 0
    try:
        with warnings.catch_warnings(), DECODE_SLOTS:
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
                factor = _reduction(opened.size, fit)
                if factor > 1 and opened.format == "JPEG":
                    opened.draft(opened.mode, (-(-width // factor), -(-height // factor)))  # the decoder scales by 1/2, 1/4 or 1/8
                opened.load()
                loaded = opened.size  # after the decoder's own scaling
                picture = ImageOps.exif_transpose(opened)
                turned = picture.size != loaded  # an EXIF orientation that swaps the sides
                full_size = (height, width) if turned else (width, height)  # what the file holds, as it is shown
                factor = _reduction(picture.size, fit, transposed=True)
                if factor == 1:
                    decoded = to_rgb(picture)
                elif picture.mode in REDUCIBLE_MODES:
                    decoded = to_rgb(picture.reduce(factor))
                else:
                    decoded = to_rgb(picture).reduce(factor)  # 16-bit, palette: to 8-bit RGB first (a slice at a time)
                decoded.info["full_size"] = full_size
                return decoded
    except UserError:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise UserError(f"{name} would decompress into too many pixels; downscale it first.") from None
    except UnidentifiedImageError:
        raise UserError(f"{name} is not a picture this server can read; upload a PNG or JPEG file.") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise UserError(f"{name} is damaged or truncated ({exc}); upload the complete picture.") from None
    finally:
        if width * height >= TRIM_FROM_PIXELS:
            _release_memory()


def _release_memory() -> None:
    """Give the memory a decode freed back to the system (glibc keeps it in its arenas otherwise: a server's
    request threads would each hold the high-water mark of the largest picture they decoded)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _load_libc():
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        return libc
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to trim
        return None


_LIBC = _load_libc()


def _reduction(size: tuple[int, int], fit: tuple[int, int] | None, transposed: bool = False) -> int:
    """The whole factor a (width, height) picture can shrink by and stay at least twice ``fit`` (height, width) on
    both sides (either orientation before the EXIF turn is known); 1 without ``fit``."""
    if fit is None:
        return 1
    width, height = size
    wanted_h, wanted_w = fit
    if not transposed:  # before exif_transpose the sides may be swapped: keep twice the larger wanted side on both
        wanted_h = wanted_w = max(wanted_h, wanted_w)
    return max(1, min(width // (2 * max(wanted_w, 1)), height // (2 * max(wanted_h, 1))))


def to_rgb(picture: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB: 16-bit is rescaled, alpha is composited on white."""
    mode = picture.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        values = np.asarray(picture)  # the picture's own values, no float64 copy of the whole of it
        largest = float(values.max(initial=0))
        top = 65535.0 if mode.startswith("I;16") or largest > 255 else 255.0
        if mode == "F":
            top = max(largest, 1e-12)
        gray = np.empty(values.shape, np.uint8)
        for start in range(0, values.shape[0], ROWS_PER_STEP):  # a slice at a time
            rows = values[start : start + ROWS_PER_STEP].astype(np.float32)
            gray[start : start + ROWS_PER_STEP] = np.clip(rows / np.float32(top) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(gray, "L").convert("RGB")
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in picture.info):
        rgba = picture.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode == "RGB":
        return picture.copy()
    return picture.convert("RGB")
