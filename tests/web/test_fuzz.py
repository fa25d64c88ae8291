"""No input answers 500: every route, driven with generated ids, query strings, JSON bodies and forms
(Hypothesis), and damaged zip archives; a refused request changes nothing; the API is described by OpenAPI."""

from __future__ import annotations

import io
import re
import struct
import zipfile
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from tests_web_helpers import API

from viz_server.config import load_settings
from viz_server.jobs.execute import execute_job
from viz_server.web import create_app

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    application = create_app(load_settings(data_dir=tmp_path_factory.mktemp("fuzz-data")), start_jobs=False)
    application.config["TESTING"] = True
    store = application.extensions["viz_store"]
    for job_id in store.db.queued_job_ids(10):  # the shipped models, ready: requests reach the deep checks
        assert store.db.claim_job(job_id)
        execute_job(store, job_id)
    return application


@pytest.fixture(scope="module")
def client(app):
    return app.test_client()


def routes(app) -> list[tuple[str, str]]:
    return sorted((rule.rule, method) for rule in app.url_map.iter_rules() if rule.endpoint != "static" for method in rule.methods - {"HEAD", "OPTIONS"})


IDS = st.one_of(st.integers(-5, 12), st.sampled_from([0, 2**31, 2**63 - 1, 2**63, 2**64, 10**30]))
TEXT = st.one_of(st.text(max_size=30), st.sampled_from(["../../etc/passwd", "%00", "²", "٣", "1e999", "9" * 400, "NaN", "<script>", "a" * 3000]))
JSON_VALUE = st.recursive(
    st.one_of(st.none(), st.booleans(), IDS, st.floats(allow_nan=False), TEXT),
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(TEXT, children, max_size=4)),
    max_leaves=8,
)
KEYS = [
    "model_id",
    "model_ids",
    "image_id",
    "image_ids",
    "technique",
    "techniques",
    "params",
    "seed",
    "second_image_id",
    "labels",
    "layout",
    "value_range",
    "mean",
    "std",
    "image_size",
    "task",
    "channel_order",
    "target",
    "name",
]
TECHNIQUE_NAMES = st.sampled_from(["saliency", "gradcam", "filters", "adversarial", "robustness_curve", "nope"])


def fill(rule: str, data) -> str:
    def replace(match):
        converter = match.group(1) or ""
        if converter.startswith("int"):
            return str(data.draw(IDS))
        return data.draw(st.sampled_from(["x", "inputs", "..", "a.png", "%2e%2e", "input_0.png", "zz" * 100]))

    return re.sub(r"<(?:(\w+):)?\w+>", replace, rule)


def one_sentence(response) -> None:
    body = response.get_json(silent=True)
    if body is not None:
        assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"] and "\n" not in body["error"] and len(body["error"]) < 600, body


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_no_generated_request_answers_500(app, client, data):
    rule, method = data.draw(st.sampled_from(routes(app)))
    url = fill(rule, data)
    query = data.draw(st.dictionaries(st.sampled_from(["page", "set", "technique", "model", "download", "token"]), TEXT, max_size=3))
    if method == "GET":
        response = client.get(url, query_string=query)
    elif url.startswith("/api/"):
        body = data.draw(st.dictionaries(st.sampled_from(KEYS), st.one_of(JSON_VALUE, TECHNIQUE_NAMES), max_size=6))
        if data.draw(st.booleans()):
            response = client.post(url, json=body, headers=API)
        else:
            response = client.post(url, data=data.draw(st.binary(max_size=200)), headers={**API, "Content-Type": "application/json"})
    else:
        with client.session_transaction() as session:
            token = session.setdefault("csrf", "fuzz-token")
        form = data.draw(st.dictionaries(st.sampled_from([*KEYS, "param_target", "param_steps", "image_ids", "model_ids"]), TEXT, max_size=6))
        form["csrf_token"] = token
        if data.draw(st.booleans()):
            form["images"] = (io.BytesIO(data.draw(st.binary(max_size=300))), data.draw(st.sampled_from(["a.png", "b.zip", "c.onnx"])))
        response = client.post(url, data=form, content_type="multipart/form-data")
    assert response.status_code < 500, (method, url, response.status_code, response.get_data(as_text=True)[:300])
    if response.status_code >= 400:
        one_sentence(response)


# ---- damaged archives --------------------------------------------------------------------------------------------------


def png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def archive(method=zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as zipped:
        zipped.writestr("cats/a.png", png())
        zipped.writestr("dogs/b.png", png())
    return buffer.getvalue()


def damaged() -> dict[str, bytes]:
    good = archive()
    stored = archive(zipfile.ZIP_STORED)
    local = good.index(b"PK\x03\x04")
    central = good.index(b"PK\x01\x02")
    name_length = struct.unpack("<H", good[local + 26 : local + 28])[0]
    data_start = local + 30 + name_length + struct.unpack("<H", good[local + 28 : local + 30])[0]
    cases = {}
    crc = bytearray(stored)  # flip a byte of the first entry's data: its CRC no longer matches
    crc[stored.index(b"PK\x03\x04") + 30 + len("cats/a.png") + 40] ^= 0xFF
    cases["bad crc"] = bytes(crc)
    smaller = bytearray(good)  # the central directory declares a smaller uncompressed size than the data holds
    smaller[central + 24 : central + 28] = struct.pack("<I", 10)
    cases["declared size smaller than real"] = bytes(smaller)
    encrypted = bytearray(good)  # the encrypted flag, on the local and the central header
    encrypted[local + 6] |= 1
    encrypted[central + 8] |= 1
    cases["encrypted flag"] = bytes(encrypted)
    unknown = bytearray(good)  # compression method 99 (AES) in both headers
    unknown[local + 8 : local + 10] = struct.pack("<H", 99)
    unknown[central + 10 : central + 12] = struct.pack("<H", 99)
    cases["unknown compression method"] = bytes(unknown)
    corrupt = bytearray(good)  # garbage inside the deflate stream
    corrupt[data_start : data_start + 8] = b"\xff" * 8
    cases["corrupt deflate stream"] = bytes(corrupt)
    mismatch = bytearray(good)  # the local header names another file than the central directory
    mismatch[local + 30 : local + 34] = b"xxxx"
    cases["header and name mismatch"] = bytes(mismatch)
    cases["truncated"] = good[: len(good) // 2]
    cases["random bytes"] = zlib.compress(b"not a zip") + b"PK"
    return cases


@pytest.mark.parametrize("name", sorted(damaged()))
def test_damaged_archives_are_one_sentence_and_store_nothing(client, name):
    data = damaged()[name]
    before = len(client.get("/api/images").get_json())
    response = client.post("/api/images", data={"images": (io.BytesIO(data), "set.zip")}, headers=API, content_type="multipart/form-data")
    assert response.status_code == 400, (name, response.status_code, response.get_data(as_text=True)[:300])
    one_sentence(response)
    with client.session_transaction() as session:
        token = session.setdefault("csrf", "fuzz-token")
    page = client.post("/images", data={"csrf_token": token, "images": (io.BytesIO(data), "set.zip")}, content_type="multipart/form-data")
    assert page.status_code == 400
    assert len(client.get("/api/images").get_json()) == before


def test_a_bomb_of_highly_compressible_entries_is_refused_before_it_is_unpacked(client):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zipped:
        for index in range(20):
            zipped.writestr(f"c/{index}.bmp", b"\0" * (8 * 2**20))
    response = client.post("/api/images", data={"images": (io.BytesIO(buffer.getvalue()), "bomb.zip")}, headers=API, content_type="multipart/form-data")
    assert response.status_code == 400 and "zip bomb" in response.get_json()["error"]


# ---- a refused request changes nothing ---------------------------------------------------------------------------------


def counts(client) -> tuple[int, int, int]:
    return len(client.get("/api/reports").get_json()), len(client.get("/api/jobs").get_json()), len(client.get("/api/images").get_json())


def test_refused_audits_comparisons_uploads_and_specs_store_nothing(client):
    models = {model["name"]: model for model in client.get("/api/models").get_json()}
    shapes_id = models["shapes_cnn"]["id"]
    image = client.get("/api/images").get_json()[0]["id"]
    before = counts(client)
    refused = [
        client.post("/api/audits", json={"model_id": shapes_id, "techniques": ["filters", "saliency"]}, headers=API),  # saliency needs images
        client.post("/api/audits", json={"model_id": shapes_id, "techniques": 5}, headers=API),
        client.post(
            "/api/comparisons",
            json={"model_ids": [shapes_id, models["digits_linear"]["id"]], "technique": "saliency", "image_ids": [image], "params": {"target": "giraffe"}},
            headers=API,
        ),
        client.post(
            "/api/images", data={"images": [(io.BytesIO(png()), "ok.png"), (io.BytesIO(b"<html>"), "bad.png")]}, headers=API, content_type="multipart/form-data"
        ),
        client.post("/api/jobs", json={"technique": "saliency", "model_id": shapes_id, "image_ids": [image, 2**63]}, headers=API),
    ]
    assert [response.status_code for response in refused] == [400] * len(refused), [r.get_data(as_text=True)[:200] for r in refused]
    spec_before = client.get(f"/api/models/{shapes_id}").get_json()["spec_overrides"]
    assert client.post(f"/api/models/{shapes_id}/spec", json={"value_range": "9" * 400}, headers=API).status_code == 400
    assert client.get(f"/api/models/{shapes_id}").get_json()["spec_overrides"] == spec_before
    assert counts(client) == before


def test_huge_ids_and_numbers_are_clean_refusals(client):
    assert client.get(f"/api/jobs/{2**63}").status_code == 404
    assert client.get(f"/jobs/{10**30}").status_code == 404
    assert client.get("/reports?page=²").status_code == 400
    response = client.post("/api/jobs", json={"technique": "saliency", "model_id": 2**63, "image_ids": [1]}, headers=API)
    assert response.status_code == 400 and "model_id" in response.get_json()["error"]
    response = client.post("/api/jobs", json={"technique": "neuron_gradient", "model_id": 2, "image_ids": [1], "params": {"channel": 10**400}}, headers=API)
    assert response.status_code == 400
    one_sentence(response)


def test_the_api_is_described_by_openapi(app, client):
    described = client.get("/api/openapi.json").get_json()
    assert described["openapi"].startswith("3.")
    paths = set(described["paths"])
    for rule, method in routes(app):
        if rule.startswith("/api/"):
            path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule)
            assert path in paths and method.lower() in described["paths"][path], (rule, method)
