import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent.parent))  # the repository root: ``benchmarks`` holds shared harnesses
sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent / "web"))

from pictures import png_bytes  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Every test run starts from an empty model cache of its own."""
    os.environ["VIZ_SERVER_CACHE"] = str(tmp_path_factory.mktemp("model-cache"))
    yield


@pytest.fixture(scope="session")
def shapes_model():
    from viz_server import load_model
    from viz_server_models import shipped_models

    return load_model(shipped_models()["shapes_cnn"])


@pytest.fixture(scope="session")
def digits_model():
    from viz_server import load_model
    from viz_server_models import shipped_models

    return load_model(shipped_models()["digits_linear"])


@pytest.fixture(scope="session")
def shape_pictures():
    """One generated picture per class of the shapes model, as PNG bytes, with labels and masks."""
    from viz_server_models import shapes

    rng = np.random.default_rng(7)
    found = []
    for name in shapes.CLASSES:
        picture, mask = shapes.make_image(name, name, rng)
        found.append((f"{name}.png", png_bytes(picture), name, mask))
    return found
