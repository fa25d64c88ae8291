"""Pictures are decoded to the size they are used at, and no upload or job holds a full-size picture longer than
its decode: a job's memory follows the model's input size, the web process's stays bounded under concurrent
uploads of the largest picture allowed."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from viz_server.model.images import decode_image
from viz_server.model.spec import ModelSpec


def jpeg(width: int, height: int, exif_orientation: int | None = None) -> bytes:
    rows, columns = np.mgrid[0:height, 0:width]
    picture = np.stack([(rows * 255 // height), (columns * 255 // width), ((rows + columns) % 256)], -1).astype(np.uint8)
    buffer = io.BytesIO()
    image = Image.fromarray(picture)
    if exif_orientation:
        exif = image.getexif()
        exif[0x0112] = exif_orientation
        image.save(buffer, format="JPEG", quality=95, exif=exif)
    else:
        image.save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def test_a_large_jpeg_is_decoded_reduced_and_reads_as_the_full_decode_does():
    data = jpeg(4000, 3000)
    reduced = decode_image(data, "photo", fit=(224, 224))
    full = decode_image(data, "photo")
    assert reduced.info["full_size"] == full.info["full_size"] == (4000, 3000)
    assert 448 <= min(reduced.size) < 1500 and full.size == (4000, 3000)
    spec = ModelSpec(input_name="x", layout="NCHW", channels=3, height=224, width=224, value_range=(0.0, 1.0), mean=(0.0,) * 3, std=(1.0,) * 3)
    difference = np.abs(spec.picture_to_unit(reduced) - spec.picture_to_unit(full))
    assert difference.mean() < 0.01, difference.mean()  # the same picture at the model's size


def test_an_exif_turned_picture_reports_its_full_size_as_shown():
    turned = decode_image(jpeg(4000, 3000, exif_orientation=6), "portrait", fit=(224, 224))
    assert turned.info["full_size"] == (3000, 4000) and turned.size[0] < turned.size[1]


def test_sixteen_bit_and_palette_pictures_reduce_too():
    sixteen = (np.add.outer(np.arange(2000), np.arange(2000)) % 65536).astype(np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(sixteen).save(buffer, format="PNG")
    decoded = decode_image(buffer.getvalue(), "deep", fit=(64, 64))
    assert decoded.mode == "RGB" and decoded.info["full_size"] == (2000, 2000) and 128 <= decoded.size[0] < 400
    palette = Image.fromarray((np.arange(2000 * 2000) % 200).reshape(2000, 2000).astype(np.uint8)).convert("P")
    buffer = io.BytesIO()
    palette.save(buffer, format="PNG")
    assert decode_image(buffer.getvalue(), "palette", fit=(64, 64)).size[0] < 400


@pytest.mark.slow
def test_a_job_on_twenty_of_the_largest_pictures_needs_memory_for_one():
    """Saliency on 20 copies of a 6,300 x 6,300 PNG (116 KiB each): the process's peak grew 3.4 GB when every
    picture was decoded whole and kept; measured now: about 300 MB, in a fresh process."""
    script = textwrap.dedent(
        """
        import io, resource
        import numpy as np
        from PIL import Image
        values = np.zeros((6300, 6300, 3), np.uint8); values[::7] = 200
        buffer = io.BytesIO(); Image.fromarray(values).save(buffer, format="PNG"); data = buffer.getvalue(); del values
        from viz_server import load_model
        from viz_server.runner import run_technique
        from viz_server_models import shipped_models
        model = load_model(shipped_models()["shapes_cnn"])
        run_technique("saliency", model, [("warm.png", data)], {"sanity_check": False, "faithfulness": False})
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        run_technique("saliency", model, [(f"{index}.png", data) for index in range(20)], {"sanity_check": False})
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
        """
    )
    finished = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr[-2000:]
    growth = float(finished.stdout.strip().splitlines()[-1])
    assert growth < 400, f"the job's peak memory grew {growth:.0f} MiB for 20 pictures"


@pytest.mark.slow
def test_the_web_process_stays_bounded_under_sixteen_uploads_of_the_largest_picture_at_once():
    """16 clients each upload a 6,300 x 6,300 16-bit PNG (39.7 Mpx, just under the limit) at once, then fetch its
    thumbnail. Before: the server's resident memory peaked at 5.0 GB and kept 4.7 GB. Now two decodes run at a
    time, a decoded picture is kept only reduced, and the freed memory goes back to the system."""
    from benchmarks.upload_memory import largest_picture, measure

    found = measure(16, largest_picture(6300))
    assert found["statuses"] == [201]
    assert found["peak"] - found["before"] < 1200, found
    assert found["after"] - found["before"] < 400, found
