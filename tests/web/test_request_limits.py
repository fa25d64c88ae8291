"""Requests that once gave a 500 or the wrong answer: deep JSON, Unicode digits and huge numbers as ids, a 405
without its Allow header, cancelling a job that does not exist, a queued inspection cancelled. Each is one
sentence with the right status, and changes nothing."""

from __future__ import annotations

import io

import numpy as np
import pytest
from tests_web_helpers import API

from viz_server.config import load_settings
from viz_server.web import create_app

JSON_WRITES = ["/api/jobs", "/api/audits", "/api/comparisons", "/api/models/1/spec", "/api/models/1/predictions"]


@pytest.fixture(scope="module")
def quiet_client(tmp_path_factory):
    """A server whose jobs never start: what is queued stays queued."""
    application = create_app(load_settings(data_dir=tmp_path_factory.mktemp("limits")), start_jobs=False)
    application.config["TESTING"] = True
    return application.test_client()


@pytest.mark.parametrize("path", JSON_WRITES)
@pytest.mark.parametrize("depth", [17, 990, 100_000])
def test_deeply_nested_json_is_a_400_with_one_sentence(quiet_client, path, depth):
    jobs_before = quiet_client.get("/api/jobs").get_json()
    body = '{"image_ids": ' + "[" * depth + "]" * depth + "}"
    response = quiet_client.post(path, data=body, content_type="application/json", headers=API)
    assert response.status_code == 400 and "nested too deeply" in response.get_json()["error"]
    assert quiet_client.get("/api/jobs").get_json() == jobs_before


@pytest.mark.parametrize("number", ["١٢", "１", "²", "9223372036854775808", "99999999999999999999", "0x1"])
def test_ids_are_ascii_record_numbers(quiet_client, number):
    for path in (f"/api/jobs/{number}", f"/api/models/{number}", f"/jobs/{number}", f"/models/{number}", f"/images/{number}/thumb.png"):
        assert quiet_client.get(path).status_code == 404, path
    assert quiet_client.post(f"/api/jobs/{number}/cancel", headers=API).status_code == 404


def test_a_405_names_the_methods_the_address_takes(quiet_client):
    response = quiet_client.put("/api/jobs/1/cancel", headers=API)
    assert response.status_code == 405 and set(response.headers["Allow"].replace(" ", "").split(",")) >= {"POST"}
    listing = quiet_client.delete("/api/jobs", headers=API)
    assert listing.status_code == 405 and {"GET", "POST"} <= set(listing.headers["Allow"].replace(" ", "").split(","))


def test_cancelling_an_unknown_job_is_a_404(quiet_client):
    response = quiet_client.post("/api/jobs/987654/cancel", headers=API)
    assert response.status_code == 404 and response.get_json()["error"] == "there is no job 987654."


def test_a_cancelled_queued_inspection_fails_its_model_and_takes_no_jobs(quiet_client):
    from viz_server_models import shipped_models

    data = shipped_models()["digits_linear"].read_bytes()
    made = quiet_client.post("/api/models", data={"model": (io.BytesIO(data), "m.onnx"), "name": "queued"}, headers=API, content_type="multipart/form-data")
    assert made.status_code == 202 and made.get_json()["job"]["status"] == "queued"
    model, job = made.get_json()["model"], made.get_json()["job"]
    assert quiet_client.post(f"/api/jobs/{job['id']}/cancel", headers=API).get_json()["status"] == "cancelled"
    after = quiet_client.get(f"/api/models/{model['id']}").get_json()
    assert after["status"] == "failed" and "cancelled" in after["error"]
    refused = quiet_client.post("/api/jobs", json={"technique": "saliency", "model_id": model["id"], "image_ids": [1]}, headers=API)
    assert refused.status_code == 400


@pytest.mark.parametrize("where", ["query", "form", "json"])
def test_a_control_character_in_a_text_value_is_a_400(quiet_client, where):
    if where == "query":
        response = quiet_client.get("/api/images?set=a%00b")
    elif where == "form":
        response = quiet_client.post(
            "/api/images", data={"set": "a\x00b", "images": (io.BytesIO(b"x"), "x.png")}, headers=API, content_type="multipart/form-data"
        )
    else:
        response = quiet_client.post("/api/models/1/spec", json={"labels": "cat\x00dog"}, headers=API)
    assert response.status_code == 400 and "control character" in response.get_json()["error"]
    assert quiet_client.get("/api/images?set=line%0Abreak").status_code == 200  # line breaks and tabs are text


@pytest.mark.parametrize("labels,fragment", [("\n".join(f"c{index}" for index in range(100_001)), "at most 100000"), ("x" * 201, "longer than 200")])
def test_a_spec_with_too_many_or_too_long_labels_is_refused(quiet_client, labels, fragment):
    before = quiet_client.get("/api/models/1").get_json()
    response = quiet_client.post("/api/models/1/spec", json={"labels": labels}, headers=API)
    assert response.status_code == 400 and fragment in response.get_json()["error"]
    assert quiet_client.get("/api/models/1").get_json() == before


@pytest.mark.parametrize("form", ["/run", "/models/1/audit", "/compare"])
def test_a_refused_form_keeps_none_of_the_pictures_uploaded_with_it(quiet_client, form):
    import re

    from pictures import png_bytes

    token = re.search(r'name="csrf_token" value="([^"]+)"', quiet_client.get("/images").get_data(as_text=True)).group(1)
    before = quiet_client.get("/api/images").get_json()
    picture = png_bytes(np.full((16, 16, 3), 200, np.uint8))
    fields = {"csrf_token": token, "technique": "saliency", "model_id": "1", "model_ids": "1", "param_smooth_samples": "-5"}
    response = quiet_client.post(form, data={**fields, "images": (io.BytesIO(picture), "new.png")}, content_type="multipart/form-data")
    assert response.status_code == 400  # a parameter below its minimum, an audit without techniques, one model to compare
    assert quiet_client.get("/api/images").get_json() == before
