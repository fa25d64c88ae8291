"""Every page and API route through Flask's test client, with a real embedded job runner behind it."""

import io
import json
import zipfile

import numpy as np
import pytest
from hostile import hostile_images, hostile_models
from pictures import png_bytes
from tests_web_helpers import API, csrf, wait_for

pytestmark = pytest.mark.slow  # real servers and job processes

PAGES = ["/", "/plugins", "/models", "/images", "/run", "/jobs", "/reports", "/compare"]


@pytest.mark.parametrize("path", PAGES)
def test_pages_render(client, path):
    page = client.get(path)
    assert page.status_code == 200
    assert "Content-Security-Policy" in page.headers and "script-src 'self'" in page.headers["Content-Security-Policy"]


def test_shipped_models_are_listed_and_ready(client):
    models = {model["name"]: model for model in client.get("/api/models").get_json()}
    assert models["shapes_cnn"]["status"] == "ready" and models["digits_linear"]["status"] == "ready"
    assert models["shapes_cnn"]["spec"]["labels"] == ["circle", "square", "triangle", "cross"]
    page = client.get(models["shapes_cnn"]["url"]).get_data(as_text=True)
    assert "Default Grad-CAM layer" in page and "worst relative error" in page


def test_api_run_saliency_and_download_everything(client, shapes_id, sample_ids):
    response = client.post(
        "/api/jobs",
        json={
            "technique": "saliency",
            "model_id": shapes_id,
            "image_ids": [sample_ids["circle.png"], sample_ids["cross.png"]],
            "params": {"target": "circle"},
            "seed": 4,
        },
        headers=API,
    )
    assert response.status_code == 202
    job = wait_for(client, f"/api/jobs/{response.get_json()['id']}")
    assert job["status"] == "done", job
    assert job["result"]["provenance"]["params"].items() >= {"target": "circle", "reduce": "max"}.items()
    assert job["result"]["provenance"]["seed"] == 4
    overlay = next(a for a in job["result"]["artifacts"] if a["name"] == "saliency_overlay_1.png")
    assert client.get(overlay["url"]).mimetype == "image/png"
    array = np.load(io.BytesIO(client.get(overlay["array_url"]).data))
    assert array.shape == (2, 64, 64)
    assert set(np.load(io.BytesIO(client.get(job["result"]["arrays_url"]).data)).files) >= {"saliency", "attribution"}
    page = client.get(job["url"]).get_data(as_text=True)
    assert "Read with care" in page and "saliency_overlay_1.png" in page
    exported = client.get(f"/jobs/{job['id']}/export.html")
    assert exported.headers["Content-Disposition"].startswith("attachment")
    pictures = [a for a in job["result"]["artifacts"] if a["kind"] in ("image", "plot")]
    assert exported.data.count(b"data:image/png;base64,") == len(pictures) >= 8 and b'src="/' not in exported.data


def test_an_inspection_job_exports_without_a_result_view(client):
    inspection = next(job for job in client.get("/api/jobs").get_json() if job["kind"] != "technique" and job["status"] == "done")
    exported = client.get(f"/jobs/{inspection['id']}/export.html")
    assert exported.status_code == 200 and b"Provenance" not in exported.data


def test_form_run_with_upload_redirects_to_job(client, shapes_id):
    token = csrf(client, f"/run?model={shapes_id}")
    picture = png_bytes(np.full((20, 30, 3), 120, np.uint8))
    response = client.post(
        "/run",
        data={
            "csrf_token": token,
            "technique": "saliency",
            "model_id": str(shapes_id),
            "param_target": "top1",
            "param_reduce": "sum",
            "seed": "0",
            "images": (io.BytesIO(picture), "grey.png"),
        },
        content_type="multipart/form-data",
    )
    assert response.status_code == 302 and "/jobs/" in response.headers["Location"]
    job = wait_for(client, "/api" + response.headers["Location"])
    assert job["status"] == "done" and job["params"]["reduce"] == "sum"


def test_audit_report_and_exports(client, shapes_id, sample_ids):
    response = client.post("/api/audits", json={"model_id": shapes_id, "techniques": ["saliency"], "image_ids": [sample_ids["square.png"]]}, headers=API)
    assert response.status_code == 202
    report = wait_for(client, f"/api/reports/{response.get_json()['id']}")
    assert report["status"] == "done" and len(report["jobs"]) == 1
    page = client.get(f"/reports/{report['id']}").get_data(as_text=True)
    assert "Export HTML" in page and 'aria-label="contents"' in page and f'href="#job-{report["jobs"][0]["id"]}"' in page
    assert page.index(">Summary<") < page.index('aria-label="contents"') < page.index('class="card job-section"')
    html = client.get(f"/reports/{report['id']}/export.html").data
    assert b"data:image/png;base64," in html and b'aria-label="contents"' in html and b"<details" in html
    exported = json.loads(client.get(f"/reports/{report['id']}/export.json").data)
    assert exported["jobs"][0]["result"]["metrics"]["targets"]


def test_compare_two_models(client, sample_ids):
    models = {model["name"]: model["id"] for model in client.get("/api/models").get_json()}
    response = client.post(
        "/api/comparisons",
        json={"model_ids": [models["shapes_cnn"], models["digits_linear"]], "technique": "saliency", "image_ids": [sample_ids["circle.png"]]},
        headers=API,
    )
    report = wait_for(client, f"/api/reports/{response.get_json()['id']}")
    assert {job["model"]["name"] for job in report["jobs"]} == {"shapes_cnn", "digits_linear"}
    assert all(job["status"] == "done" for job in report["jobs"])
    page = client.get(f"/reports/{report['id']}").get_data(as_text=True)
    assert "Metrics across models" in page and page.count('<th class="group-name">') >= 1
    header = page[page.index('<table class="compare-rows">') :].split("</tr>")[0]
    assert "shapes_cnn" in header and "digits_linear" in header  # one column per model, artifacts of a group in one row
    exported = client.get(f"/reports/{report['id']}/export.html").data
    assert b"Metrics across models" in exported and b'src="/' not in exported
    chart = client.get(f"/reports/{report['id']}/comparison.png")  # drawn only when asked for
    assert (chart.status_code, chart.mimetype) in ((200, "image/png"), (404, "application/json"), (404, "text/html"))
    assert (chart.status_code == 200) == (f'src="/reports/{report["id"]}/comparison.png"' in page)


def test_upload_zip_image_set_with_labels(client):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("circle/a.png", png_bytes(np.zeros((8, 8, 3), np.uint8)))
        archive.writestr("square/b.png", png_bytes(np.ones((8, 8, 3), np.uint8)))
        archive.writestr("../../evil.png", png_bytes(np.ones((8, 8, 3), np.uint8)))
        archive.writestr("notes.txt", "skip me")
    response = client.post("/api/images", data={"images": (io.BytesIO(buffer.getvalue()), "toy.zip")}, headers=API, content_type="multipart/form-data")
    assert response.status_code == 201
    stored = response.get_json()
    assert sorted((image["set"], image["label"], image["name"]) for image in stored) == [("toy", "circle", "a.png"), ("toy", "square", "b.png")]


def test_a_set_with_object_masks_gets_a_method_ranking_with_localization(client, shapes_id):
    from viz_server_models import shapes

    data = shapes.make_dataset(3, seed=5, congruent_fraction=1.0)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for index, (picture, mask, label) in enumerate(zip(data.images, data.masks, data.shape_labels)):
            folder = shapes.CLASSES[label]
            archive.writestr(f"{folder}/{index}.png", png_bytes(picture))
            archive.writestr(f"{folder}/{index}.mask.png", png_bytes((mask * 255).astype(np.uint8)))
    stored = client.post(
        "/api/images", data={"images": (io.BytesIO(buffer.getvalue()), "masked.zip")}, headers=API, content_type="multipart/form-data"
    ).get_json()
    assert len(stored) == 3 and all(image["has_mask"] for image in stored)
    params = {"methods": "gradcam", "smooth_samples": 0, "sanity_images": 1, "sensitivity_samples": 0, "road_steps": 3}
    response = client.post(
        "/api/jobs", json={"technique": "attribution_ranking", "model_id": shapes_id, "image_ids": [i["id"] for i in stored], "params": params}, headers=API
    )
    job = wait_for(client, f"/api/jobs/{response.get_json()['id']}")
    assert job["status"] == "done", job
    metrics = job["result"]["metrics"]
    assert metrics["masks"] and all(row["pointing_game"] is not None for row in metrics["ranking"])
    assert [row["method"] for row in metrics["ranking"]][-1] == "the object mask (a perfect map)"
    assert "ROAD gap" in client.get(job["url"]).get_data(as_text=True)

    orphan = io.BytesIO()
    with zipfile.ZipFile(orphan, "w") as archive:
        archive.writestr("circle/a.png", png_bytes(np.zeros((8, 8, 3), np.uint8)))
        archive.writestr("circle/b.mask.png", png_bytes(np.zeros((8, 8), np.uint8)))
    before = len(client.get("/api/images").get_json())
    refused = client.post("/api/images", data={"images": (io.BytesIO(orphan.getvalue()), "orphan.zip")}, headers=API, content_type="multipart/form-data")
    assert refused.status_code == 400 and "b.mask.png is a mask with no picture" in refused.get_json()["error"]
    assert len(client.get("/api/images").get_json()) == before


def test_zip_bomb_is_refused(client):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("big/zeros.png", b"\0" * (64 * 2**20))
    response = client.post("/api/images", data={"images": (io.BytesIO(buffer.getvalue()), "bomb.zip")}, headers=API, content_type="multipart/form-data")
    assert response.status_code == 400 and "zip bomb" in response.get_json()["error"]


@pytest.mark.parametrize("name", ["html.png", "bomb.png", "random.png", "empty.png"])
def test_hostile_image_uploads_are_400(client, name):
    data = hostile_images()[name][0]
    response = client.post("/api/images", data={"images": (io.BytesIO(data), name)}, headers=API, content_type="multipart/form-data")
    assert response.status_code == 400
    assert response.get_json()["error"].endswith(".")


@pytest.mark.parametrize("name", ["external_data.onnx", "nan_weights.onnx", "non_image.onnx"])
def test_hostile_model_upload_fails_its_inspection_with_one_sentence(client, name):
    data, fragment = hostile_models()[name]
    response = client.post("/api/models", data={"model": (io.BytesIO(data), name)}, headers=API, content_type="multipart/form-data")
    assert response.status_code == 202
    job = wait_for(client, f"/api/jobs/{response.get_json()['job']['id']}")
    assert job["status"] == "failed" and fragment in job["error"]
    model = client.get(f"/api/models/{response.get_json()['model']['id']}").get_json()
    assert model["status"] == "failed" and fragment in model["error"]
    assert client.get(model["url"]).status_code == 200


@pytest.mark.parametrize("name", ["truncated.onnx", "random.onnx", "html.onnx", "picture"])
def test_a_file_that_is_not_onnx_is_refused_before_anything_is_stored(client, name):
    from pictures import png_bytes

    data = png_bytes(np.zeros((8, 8, 3), np.uint8)) if name == "picture" else hostile_models()[name][0]
    before = client.get("/api/models").get_json()
    response = client.post("/api/models", data={"model": (io.BytesIO(data), "x.onnx")}, headers=API, content_type="multipart/form-data")
    assert response.status_code == 400 and "not an ONNX model" in response.get_json()["error"]
    assert client.get("/api/models").get_json() == before  # no failed row left in the list


def test_markup_in_model_is_escaped(client):
    data = hostile_models()["markup_names.onnx"][0]
    response = client.post(
        "/api/models", data={"model": (io.BytesIO(data), "x.onnx"), "name": "<img src=x onerror=alert(1)>"}, headers=API, content_type="multipart/form-data"
    )
    model_id = response.get_json()["model"]["id"]
    wait_for(client, f"/api/models/{model_id}")
    page = client.get(f"/models/{model_id}").get_data(as_text=True)
    assert "<script>alert" not in page and "&lt;script&gt;alert" in page
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page


@pytest.mark.parametrize(
    "body,status,fragment",
    [
        ({"technique": "nope", "model_id": 1, "image_ids": [1]}, 400, "no technique named"),
        ({"technique": "saliency", "model_id": 999, "image_ids": [1]}, 404, "no model 999"),
        ({"technique": "saliency", "model_id": "x", "image_ids": [1]}, 400, "model_id"),
        ({"technique": "saliency", "model_id": 2, "image_ids": []}, 400, "needs at least one image"),
        ({"technique": "saliency", "model_id": 2, "image_ids": [99999]}, 400, "no image 99999"),
        ({"technique": "saliency", "model_id": 2, "image_ids": [1], "params": {"target": "giraffe"}}, 400, "labels"),
        ({"technique": "saliency", "model_id": 2, "image_ids": [1], "params": {"reduce": "mean"}}, 400, "one of max, sum"),
    ],
)
def test_api_job_errors_are_one_sentence(client, shapes_id, body, status, fragment):
    if body.get("model_id") == 2:
        body["model_id"] = shapes_id
    response = client.post("/api/jobs", json=body, headers=API)
    assert response.status_code == status, response.get_json()
    assert fragment in response.get_json()["error"]


def test_cancel_a_queued_job(client, shapes_id, sample_ids):
    response = client.post("/api/jobs", json={"technique": "saliency", "model_id": shapes_id, "image_ids": [sample_ids["circle.png"]]}, headers=API)
    job_id = response.get_json()["id"]
    cancelled = client.post(f"/api/jobs/{job_id}/cancel", headers=API).get_json()
    final = wait_for(client, f"/api/jobs/{job_id}")
    assert cancelled["status"] in ("cancelled", "running", "queued") and final["status"] in ("cancelled", "done")


def test_not_found_and_method_errors(client):
    assert client.get("/jobs/99999").status_code == 404
    assert client.get("/api/jobs/99999").get_json()["error"] == "there is no job 99999."
    assert client.get("/nowhere").status_code == 404
    assert client.put("/api/jobs", headers=API).status_code == 405


def test_spec_update_reinspects_with_new_labels(client):
    from model_zoo import export

    response = client.post(
        "/api/models", data={"model": (io.BytesIO(export("residual", "torchscript", 17)), "res.onnx")}, headers=API, content_type="multipart/form-data"
    )
    model_id = response.get_json()["model"]["id"]
    assert wait_for(client, f"/api/models/{model_id}")["spec"]["labels"] == []
    bad = client.post(f"/api/models/{model_id}/spec", json={"layout": "sideways"}, headers=API)
    assert bad.status_code == 400 and "layout" in bad.get_json()["error"]
    job = client.post(f"/api/models/{model_id}/spec", json={"labels": ["a", "b", "c", "d", "e"], "value_range": [0, 255]}, headers=API)
    assert job.status_code == 202
    model = wait_for(client, f"/api/models/{model_id}")
    assert model["spec"]["labels"] == ["a", "b", "c", "d", "e"] and model["spec"]["value_range"] == [0.0, 255.0]
    token = csrf(client, f"/models/{model_id}")
    form = client.post(f"/models/{model_id}/spec", data={"csrf_token": token, "labels": "v, w, x, y, z", "layout": "NCHW"})
    assert form.status_code == 302
    assert wait_for(client, f"/api/models/{model_id}")["spec"]["labels"] == ["v", "w", "x", "y", "z"]


def test_a_refused_spec_change_leaves_the_model_ready_with_its_working_spec(client):
    """Wrong label count: refused at once (400, sentence beside the field); a spec that only verification can
    refuse (a size the model cannot run at) is tried by its job and not saved. Unchanged guesses stay guesses."""
    from task_models import export_task_model

    response = client.post(
        "/api/models", data={"model": (io.BytesIO(export_task_model("variable_size")), "variable.onnx")}, headers=API, content_type="multipart/form-data"
    )
    model_id = response.get_json()["model"]["id"]
    ready = wait_for(client, f"/api/models/{model_id}")
    assert ready["status"] == "ready" and "normalization" in ready["spec"]["guessed"]
    wrong = client.post(f"/api/models/{model_id}/spec", json={"labels": ["a", "b", "c"]}, headers=API)
    assert wrong.status_code == 400 and "3 labels were given but the model has 2 outputs" in wrong.get_json()["error"]
    assert client.get(f"/api/models/{model_id}").get_json()["status"] == "ready"
    token = csrf(client, f"/models/{model_id}")
    page = client.post(f"/models/{model_id}/spec", data={"csrf_token": token, "labels": "a, b, c", "layout": "NCHW"})
    assert page.status_code == 400 and "field-error" in page.get_data(as_text=True)
    assert "a, b, c" in page.get_data(as_text=True)  # the typed value is kept
    tried = client.post(f"/api/models/{model_id}/spec", json={"image_size": "3,3"}, headers=API)  # too small for two 2x2 poolings
    assert tried.status_code == 202
    after = wait_for(client, f"/api/models/{model_id}")
    job = client.get(f"/api/jobs/{tried.get_json()['job']['id']}").get_json()
    assert job["status"] == "failed" and after["status"] == "ready" and after["spec_overrides"] == ready["spec_overrides"]
    assert "This spec was refused and not saved" in client.get(f"/models/{model_id}").get_data(as_text=True)
    shown = {name: value for name, value in (("layout", "NCHW"), ("mean", "0.485,0.456,0.406"), ("std", "0.229,0.224,0.225"), ("labels", "yes, no"))}
    saved = client.post(f"/models/{model_id}/spec", data={"csrf_token": csrf(client, f"/models/{model_id}"), **shown})
    assert saved.status_code == 302
    final = wait_for(client, f"/api/models/{model_id}")
    assert final["spec"]["labels"] == ["yes", "no"] and "normalization" in final["spec"]["guessed"]  # the guesses sent back unchanged stay guesses
    assert set(final["spec_overrides"]) == {"labels"}


def test_form_cancel_and_compare(client, shapes_id, sample_ids):
    response = client.post("/api/jobs", json={"technique": "saliency", "model_id": shapes_id, "image_ids": [sample_ids["cross.png"]]}, headers=API)
    job_id = response.get_json()["id"]
    token = csrf(client, f"/jobs/{job_id}")
    assert client.post(f"/jobs/{job_id}/cancel", data={"csrf_token": token}).status_code == 302
    assert wait_for(client, f"/api/jobs/{job_id}")["status"] in ("cancelled", "done")
    models = {model["name"]: model["id"] for model in client.get("/api/models").get_json()}
    token = csrf(client, "/compare")
    compared = client.post(
        "/compare",
        data={
            "csrf_token": token,
            "technique": "saliency",
            "model_ids": [str(models["shapes_cnn"]), str(models["digits_linear"])],
            "image_ids": [str(sample_ids["cross.png"])],
            "param_target": "top1",
            "param_reduce": "max",
        },
    )
    assert compared.status_code == 302 and "/reports/" in compared.headers["Location"]
    one_model = client.post(
        "/compare", data={"csrf_token": token, "technique": "saliency", "model_ids": [str(shapes_id)], "image_ids": [str(sample_ids["cross.png"])]}
    )
    assert one_model.status_code == 400 and "at least two models" in one_model.get_data(as_text=True)


def test_input_pictures_come_with_their_arrays(client, shapes_id, sample_ids):
    response = client.post("/api/jobs", json={"technique": "saliency", "model_id": shapes_id, "image_ids": [sample_ids["square.png"]]}, headers=API)
    job = wait_for(client, f"/api/jobs/{response.get_json()['id']}")
    for artifact in job["result"]["artifacts"]:
        assert artifact["array_url"], artifact["name"]
    inputs = np.load(io.BytesIO(client.get(job["result"]["artifacts"][0]["array_url"]).data))
    assert inputs.shape == (1, 3, 64, 64)


def test_embeddings_on_an_uploaded_set_show_a_hoverable_scatter(client, shapes_id, tmp_path):
    from viz_server_models.shapes import write_image_set

    write_image_set(tmp_path / "set", per_class=3, seed=9)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted((tmp_path / "set").rglob("*.png")):
            archive.write(path, f"{path.parent.name}/{path.name}")
    stored = client.post(
        "/api/images", data={"images": (io.BytesIO(buffer.getvalue()), "shapes.zip")}, headers=API, content_type="multipart/form-data"
    ).get_json()
    response = client.post(
        "/api/jobs", json={"technique": "embeddings", "model_id": shapes_id, "image_ids": [i["id"] for i in stored], "params": {"method": "pca"}}, headers=API
    )
    job = wait_for(client, f"/api/jobs/{response.get_json()['id']}")
    assert job["status"] == "done", job
    assert {"circle", "square", "triangle", "cross"} <= set(job["result"]["provenance"]["labels"])
    page = client.get(job["url"]).get_data(as_text=True)
    assert page.count('<g class="pt">') == 12 * len(job["result"]["metrics"]["layers"])
    assert f'href="/images/{stored[0]["id"]}/thumb.png"' in page


@pytest.mark.parametrize(
    "technique,model_name,params",
    [
        ("class_templates", "digits_linear", {}),
        ("filters", "shapes_cnn", {}),
        ("class_visualization", "shapes_cnn", {"target": "square", "steps": 30}),
        ("neuron_visualization", "shapes_cnn", {"channel": 1, "steps": 30}),
    ],
)
def test_techniques_without_images_run_from_the_api(client, technique, model_name, params):
    models = {model["name"]: model["id"] for model in client.get("/api/models").get_json()}
    response = client.post("/api/jobs", json={"technique": technique, "model_id": models[model_name], "image_ids": [], "params": params}, headers=API)
    assert response.status_code == 202, response.get_json()
    job = wait_for(client, f"/api/jobs/{response.get_json()['id']}")
    assert job["status"] == "done", job
    assert client.get(job["url"]).status_code == 200


def test_reports_are_listed_a_page_at_a_time(app, client):
    from viz_server.store import ReportRecord

    store = app.extensions["viz_store"]
    before = store.report_count()
    for number in range(60):
        store.db.add(ReportRecord(kind="audit", title=f"paged {number}"))
    listed = client.get("/api/reports")
    assert listed.status_code == 200 and int(listed.headers["X-Total-Count"]) == before + 60
    first_page = listed.get_json()
    assert len(first_page) == 50 and first_page[0]["title"] == "paged 59"  # newest first
    second_page = client.get("/api/reports?page=2").get_json()
    assert {report["id"] for report in first_page}.isdisjoint(report["id"] for report in second_page)
    html = client.get("/reports").get_data(as_text=True)
    assert "paged 59" in html and "paged 0<" not in html and "older</a>" in html
    assert "paged 0<" in client.get("/reports?page=2").get_data(as_text=True)
    bad = client.get("/api/reports?page=zero", headers=API)
    assert bad.status_code == 400 and "page" in bad.get_json()["error"]


def test_an_embedding_explanation_records_its_second_image_everywhere(client):
    """Params, provenance, the job page, the export and the re-run form all carry the second image."""
    from task_models import export_task_model

    response = client.post(
        "/api/models", data={"model": (io.BytesIO(export_task_model("embedder")), "embedder.onnx")}, headers=API, content_type="multipart/form-data"
    )
    model_id = response.get_json()["model"]["id"]
    assert wait_for(client, f"/api/models/{model_id}")["spec"]["task"] == "embedding"
    images = client.get("/api/images").get_json()
    first, second = images[0], images[1]
    body = {"technique": "saliency", "model_id": model_id, "image_ids": [first["id"]], "second_image_id": second["id"], "params": {"sanity_check": False}}
    job = wait_for(client, f"/api/jobs/{client.post('/api/jobs', json=body, headers=API).get_json()['id']}")
    assert job["status"] == "done" and job["second_image_id"] == second["id"]
    assert job["result"]["provenance"]["second_image"] == second["name"]
    assert job["result"]["metrics"]["target_measure"].startswith("similarity to the second image")
    page = client.get(job["url"]).get_data(as_text=True)
    assert "second image" in page and second["name"] in page
    assert second["name"] in client.get(f"/jobs/{job['id']}/export.html").get_data(as_text=True)
    rerun = client.get(f"/run?rerun={job['id']}").get_data(as_text=True)
    assert f'<option value="{second["id"]}" selected>' in rerun
    refused = client.post("/api/audits", json={"model_id": model_id, "techniques": ["saliency"], "image_ids": [first["id"]]}, headers=API)
    assert refused.status_code == 400 and "second_image_id" in refused.get_json()["error"]
    audit = client.post(
        "/api/audits", json={"model_id": model_id, "techniques": ["saliency"], "image_ids": [first["id"]], "second_image_id": second["id"]}, headers=API
    )
    assert audit.status_code == 202
    audited = wait_for(client, f"/api/jobs/{audit.get_json()['jobs'][0]['id']}")
    assert audited["status"] == "done" and audited["second_image_id"] == second["id"]


def test_a_forward_only_model_is_stored_explained_by_forward_passes_and_refuses_gradients(client, sample_ids):
    from task_models import with_loop

    from viz_server_models import shipped_models

    data = with_loop(shipped_models()["shapes_cnn"].read_bytes())
    response = client.post("/api/models", data={"model": (io.BytesIO(data), "looped.onnx")}, headers=API, content_type="multipart/form-data")
    assert response.status_code == 202
    model = wait_for(client, f"/api/models/{response.get_json()['model']['id']}")
    assert model["status"] == "ready" and "control-flow op Loop" in model["conversion"]["forward_only"]
    page = client.get(model["url"]).get_data(as_text=True)
    assert "forward-only" in page and "runs on onnxruntime only" in page
    job = client.post("/api/jobs", json={"technique": "occlusion", "model_id": model["id"], "image_ids": [sample_ids["circle.png"]]}, headers=API)
    assert job.status_code == 202
    done = wait_for(client, f"/api/jobs/{job.get_json()['id']}")
    assert done["status"] == "done" and done["result"]["metrics"]["sanity_check"]["steps"], done["error"]
    refused = client.post("/api/jobs", json={"technique": "saliency", "model_id": model["id"], "image_ids": [sample_ids["circle.png"]]}, headers=API)
    assert refused.status_code == 400
    assert "needs its differentiable graph; techniques that run on it: occlusion, rise" in refused.get_json()["error"]
    audit_page = client.get(f"/models/{model['id']}/audit").get_data(as_text=True)
    assert 'value="occlusion"' in audit_page and 'value="saliency"' not in audit_page
    run_page = client.get(f"/run?model={model['id']}&technique=saliency").get_data(as_text=True)
    assert '<option value="occlusion"' in run_page and '<option value="saliency"' not in run_page  # the form offers what runs
