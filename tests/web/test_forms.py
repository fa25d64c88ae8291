"""The run form offers each model's task targets, its defaults are always accepted, and the model's own
predictions (detections to pick from) come from a prediction job. Jobs are inspected or run in this process,
so nothing waits on the job runner."""

from __future__ import annotations

import io
import re
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image
from tests_web_helpers import API

from viz_server.config import load_settings
from viz_server.installed import techniques
from viz_server.jobs.execute import execute_job
from viz_server.web import create_app
from viz_server_models import shapes


class FormFields(HTMLParser):
    """The values a browser would submit for the run form untouched (defaults), plus the target choices."""

    def __init__(self):
        super().__init__()
        self.fields: dict[str, str] = {}
        self.options: dict[str, list[str]] = {}
        self.images: list[str] = []
        self._select: str | None = None
        self._in_run_form = False

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "form":
            self._in_run_form = attributes.get("id") == "run-form"
        if not self._in_run_form:
            return
        name = attributes.get("name")
        if tag == "input" and name:
            kind = attributes.get("type", "text")
            if name == "image_ids":
                self.images.append(attributes["value"])
            elif kind == "checkbox":
                if "checked" in attributes:
                    self.fields[name] = attributes.get("value", "on")
            elif kind != "file":
                self.fields[name] = attributes.get("value", "")
        elif tag == "select" and name:
            self._select = name
            self.options[name] = []
        elif tag == "option" and self._select:
            self.options[self._select].append(attributes.get("value", ""))
            if "selected" in attributes or self._select not in self.fields:
                self.fields[self._select] = attributes.get("value", "")

    def handle_endtag(self, tag):
        if tag == "select":
            self._select = None
        if tag == "form":
            self._in_run_form = False


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    application = create_app(load_settings(data_dir=tmp_path_factory.mktemp("forms-data")), start_jobs=False)
    application.config["TESTING"] = True
    store = application.extensions["viz_store"]
    for job_id in store.db.queued_job_ids(10):  # the shipped models' inspections, here and now
        assert store.db.claim_job(job_id)
        execute_job(store, job_id)
    return application


@pytest.fixture(scope="module")
def client(app):
    return app.test_client()


def models(client) -> dict[str, dict]:
    return {model["name"]: model for model in client.get("/api/models").get_json()}


def run(app, client, job_id: int) -> dict:
    store = app.extensions["viz_store"]
    assert store.db.claim_job(job_id)
    execute_job(store, job_id)
    return client.get(f"/api/jobs/{job_id}").get_json()


@pytest.mark.parametrize("technique", sorted(techniques()))
def test_the_run_forms_defaults_are_always_accepted(client, technique):
    chosen = techniques()[technique]
    for name, model in models(client).items():
        assert model["status"] == "ready", model
        page = client.get(f"/run?model={model['id']}&technique={technique}").get_data(as_text=True)
        form = FormFields()
        form.feed(page)
        if not chosen.supports(model["spec"]["task"]):  # the form says so and offers what applies; a post is refused
            assert "applies to" in page and f'<option value="{technique}"' not in page, f"{technique} on {name}"
            refused = client.post("/run", data={**form.fields, "technique": technique, "image_ids": form.images[0]})
            assert refused.status_code == 400 and "applies to" in refused.get_data(as_text=True)
            continue
        data = dict(form.fields)
        if {"image", "image_set", "dataset"} & set(chosen.inputs):  # a picture of one of the model's classes (a set's labels are read)
            classes = set(model["spec"].get("labels") or [])
            data["image_ids"] = next((str(image["id"]) for image in client.get("/api/images").get_json() if image["label"] in classes), form.images[0])
        for param in chosen.params:
            if param.kind != "bool":
                assert f"param_{param.name}" in data, f"{technique} on {name}: the form lacks {param.name}"
        response = client.post("/run", data=data)
        assert response.status_code == 302, f"{technique} on {name}: {response.get_data(as_text=True)[-400:]}"


def test_the_target_picker_offers_the_tasks_targets(client):
    by_name = models(client)
    page = client.get(f"/run?model={by_name['shapes_detector']['id']}&technique=gradcam").get_data(as_text=True)
    form = FormFields()
    form.feed(page)
    assert form.options["param_target"][:3] == ["top1", "detection:0", "detection:1"] and "circle" in form.options["param_target"]
    assert "data-predict-url" in page and "param_target_other" in form.fields
    page = client.get(f"/run?model={by_name['shapes_cnn']['id']}&technique=class_visualization").get_data(as_text=True)
    form = FormFields()
    form.feed(page)
    assert form.fields["param_target"] == "0" and "circle" in form.options["param_target"]


def test_a_typed_target_wins_over_the_list(client):
    by_name = models(client)
    detector = by_name["shapes_detector"]
    page = client.get(f"/run?model={detector['id']}&technique=saliency").get_data(as_text=True)
    form = FormFields()
    form.feed(page)
    data = {**form.fields, "image_ids": form.images[0], "param_target_other": "detection:3:w"}
    response = client.post("/run", data=data)
    assert response.status_code == 302
    job = client.get(f"/api/jobs/{response.headers['Location'].rstrip('/').split('/')[-1]}").get_json()
    assert job["params"]["target"] == "detection:3:w"


def test_the_detectors_predictions_come_from_a_job(app, client):
    by_name = models(client)
    rng = np.random.default_rng(42)
    scene = shapes.make_scene(rng, objects=(2, 2))
    buffer = io.BytesIO()
    Image.fromarray(scene.image).save(buffer, format="PNG")
    uploaded = client.post("/api/images", data={"images": (io.BytesIO(buffer.getvalue()), "scene.png")}, headers=API).get_json()
    response = client.post(f"/api/models/{by_name['shapes_detector']['id']}/predictions", json={"image_id": uploaded[0]["id"]}, headers=API)
    assert response.status_code == 202
    job = run(app, client, response.get_json()["job"]["id"])
    assert job["status"] == "done" and job["result"]["task"] == "detection" and job["result"]["size"] == [96, 96]
    found = {detection["class"] for detection in job["result"]["prediction"]["detections"]}
    assert {shapes.CLASSES[label] for label in scene.labels} <= found
    refused = client.post(f"/api/models/{by_name['shapes_detector']['id']}/predictions", json={"image_id": 10**6}, headers=API)
    assert refused.status_code == 400 and "image_id" in refused.get_json()["error"]


def test_the_audit_offers_only_what_applies_to_the_task(client):
    by_name = models(client)
    page = client.get(f"/models/{by_name['shapes_detector']['id']}/audit").get_data(as_text=True)
    offered = set(re.findall(r'name="techniques" value="([^"]+)"', page))
    assert offered and not any(name in offered for name, t in techniques().items() if not t.supports("detection"))
    assert set(re.findall(r'name="techniques" value="([^"]+)" checked', page)) <= offered


def test_a_refused_value_comes_back_beside_its_field_with_the_input_kept(client):
    by_name = models(client)
    page = client.get(f"/run?model={by_name['shapes_cnn']['id']}&technique=saliency").get_data(as_text=True)
    form = FormFields()
    form.feed(page)
    data = {**form.fields, "image_ids": form.images[0], "param_smooth_samples": "-5", "param_smooth_noise": "0.3"}
    response = client.post("/run", data=data)
    assert response.status_code == 400
    again = FormFields()
    again.feed(response.get_data(as_text=True))
    assert again.fields["param_smooth_samples"] == "-5" and again.fields["param_smooth_noise"] == "0.3"
    field = re.search(
        r'<label class="param invalid">\s*<span class="param-name">(\w+)</span>.*?<strong class="field-error"[^>]*>([^<]+)',
        response.get_data(as_text=True),
        re.S,
    )
    assert field and field.group(1) == "smooth_samples" and "below its minimum" in field.group(2)


def test_a_job_page_shows_its_parameters_and_offers_edit_and_rerun(app, client):
    by_name = models(client)
    page = client.get(f"/run?model={by_name['shapes_cnn']['id']}&technique=saliency").get_data(as_text=True)
    form = FormFields()
    form.feed(page)
    chosen = form.images[1]
    response = client.post("/run", data={**form.fields, "image_ids": chosen, "param_smooth_samples": "3", "seed": "7"})
    job = run(app, client, int(response.headers["Location"].rstrip("/").split("/")[-1]))
    assert job["status"] == "done", job
    shown = client.get(job["url"]).get_data(as_text=True)
    assert 'id="job-parameters"' in shown and "smooth_samples" in shown and f'href="/run?rerun={job["id"]}"' in shown
    assert "{&#39;" not in shown and "{'" not in shown  # metrics are tables, not Python's repr
    assert shown.count('class="colorbar"') >= 2  # every heatmap with its value scale
    rerun = client.get(f"/run?rerun={job['id']}").get_data(as_text=True)
    refilled = FormFields()
    refilled.feed(rerun)
    assert refilled.fields["param_smooth_samples"] == "3" and refilled.fields["seed"] == "7"
    assert re.search(rf'name="image_ids" value="{chosen}" checked', rerun)


def test_the_plugins_page_is_grouped_by_family_with_folded_parameters(client):
    page = client.get("/plugins").get_data(as_text=True)
    assert 'aria-label="techniques by family"' in page and 'href="#technique-attribution_ranking"' in page
    assert page.index('id="family-attribution"') < page.index('id="family-robustness"')
    assert page.count("<details><summary>") == len(techniques()) and "needs: ·" not in page


def test_deleting_a_model_says_what_goes_with_it_and_takes_nothing_else(app, client):
    from viz_server.store import JobRecord
    from viz_server_models import shipped_models

    store = app.extensions["viz_store"]
    data = shipped_models()["shapes_cnn"].read_bytes()
    uploaded = client.post("/api/models", data={"model": (io.BytesIO(data), "copy.onnx"), "name": "copy"}, headers=API, content_type="multipart/form-data")
    model_id, inspection = uploaded.get_json()["model"]["id"], uploaded.get_json()["job"]["id"]
    assert run(app, client, inspection)["status"] == "done"
    image_id = client.get("/api/images").get_json()[0]["id"]
    audit = client.post("/api/audits", json={"model_id": model_id, "techniques": ["saliency"], "image_ids": [image_id]}, headers=API).get_json()
    job_id = audit["jobs"][0]["id"]

    blocked = client.delete(f"/api/models/{model_id}", headers=API)  # the audit's job is still queued
    assert blocked.status_code == 400 and "still run" in blocked.get_json()["error"]
    assert client.get(f"/api/models/{model_id}").status_code == 200 and client.get(f"/api/jobs/{job_id}").status_code == 200
    assert run(app, client, job_id)["status"] == "done"

    confirm = client.get(f"/models/{model_id}/delete").get_data(as_text=True)
    assert "the 2 jobs made from it" in confirm and f'href="/reports/{audit["id"]}"' in confirm and 'id="confirm-delete"' in confirm
    others = {model["id"] for model in client.get("/api/models").get_json()} - {model_id}
    deleted = client.delete(f"/api/models/{model_id}", headers=API)
    assert deleted.status_code == 200 and deleted.get_json()["jobs"] == sorted([inspection, job_id]) and deleted.get_json()["reports"] == [audit["id"]]
    assert client.get(f"/api/models/{model_id}").status_code == 404 and client.get(f"/api/reports/{audit['id']}").status_code == 404
    assert {model["id"] for model in client.get("/api/models").get_json()} == others
    assert store.db.get(JobRecord, job_id) is None
    store.collect_garbage(grace_seconds=0)  # the copy shares its bytes with the shipped model: they stay
    assert store.blobs.exists(store.db.get(type(store.models()[0]), store.models()[0].id).sha256)
    shipped = client.delete(f"/api/models/{min(others)}", headers=API)
    assert shipped.status_code == 400 and "shipped model" in shipped.get_json()["error"]


def test_deleting_an_image_takes_the_jobs_made_from_it_and_its_unused_bytes(app, client):
    store = app.extensions["viz_store"]
    picture = Image.fromarray(np.full((9, 9, 3), 77, np.uint8))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    stored = client.post(
        "/api/images", data={"images": (io.BytesIO(buffer.getvalue()), "grey.png")}, headers=API, content_type="multipart/form-data"
    ).get_json()
    image = stored[0]
    shapes_id = models(client)["shapes_cnn"]["id"]
    job = client.post(
        "/api/jobs", json={"technique": "saliency", "model_id": shapes_id, "image_ids": [image["id"]], "params": {"sanity_check": False}}, headers=API
    ).get_json()
    done = run(app, client, job["id"])
    assert done["status"] == "done"
    confirm = client.get(f"/images/{image['id']}/delete").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', confirm).group(1)
    page = client.post(f"/images/{image['id']}/delete", data={"csrf_token": token})
    assert page.status_code == 302
    assert client.get(f"/api/jobs/{job['id']}").status_code == 404 and image["id"] not in {i["id"] for i in client.get("/api/images").get_json()}
    assert store.collect_garbage(grace_seconds=0) >= 1 and not store.blobs.exists(image["sha256"])


def test_an_empty_upload_says_so_on_its_own_page(client):
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/models").get_data(as_text=True)).group(1)
    response = client.post("/models", data={"name": "x", "csrf_token": token})
    assert response.status_code == 400 and 'id="upload-error"' in response.get_data(as_text=True) and "no file was chosen" in response.get_data(as_text=True)
    assert 'action="/models"' in response.get_data(as_text=True)
    assert client.get("/favicon.ico").status_code == 200


def test_a_refused_audit_comes_back_with_its_choices_kept(client):
    shapes_id = models(client)["shapes_cnn"]["id"]
    page = client.get(f"/models/{shapes_id}/audit").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    response = client.post(f"/models/{shapes_id}/audit", data={"csrf_token": token, "techniques": ["gradcam", "filters"]})
    shown = response.get_data(as_text=True)
    assert response.status_code == 400 and 'id="error-message"' in shown and "needs at least one image" in shown
    assert set(re.findall(r'name="techniques" value="([^"]+)" checked', shown)) == {"gradcam", "filters"}


def test_a_refused_comparison_comes_back_with_its_choices_kept(client):
    by_name = models(client)
    page = client.get("/compare?technique=saliency").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    chosen = [str(by_name["shapes_cnn"]["id"]), str(by_name["digits_linear"]["id"])]
    data = {"csrf_token": token, "technique": "saliency", "model_ids": chosen, "param_smooth_samples": "999"}
    response = client.post("/compare", data=data)
    shown = response.get_data(as_text=True)
    assert response.status_code == 400 and "above its maximum" in shown and 'class="field-error"' in shown and 'value="999"' in shown
    assert set(re.findall(r'name="model_ids" value="(\d+)" checked', shown)) == set(chosen)


def test_a_blob_written_again_starts_its_grace_period_again(app):
    import os

    store = app.extensions["viz_store"]
    digest = store.blobs.put(b"the same bytes twice")
    os.utime(store.blobs.path(digest), (0, 0))  # long unreferenced
    store.blobs.put(b"the same bytes twice")  # a new record is about to refer to it
    store.collect_garbage()
    assert store.blobs.exists(digest)


def test_a_whole_image_set_is_chosen_in_one_tick(app, client):
    """Run, Audit and Compare take every picture of a set ticked as a set (with pictures ticked beside it, each
    once); the set's page counts its classes and masks."""
    by_name = models(client)
    images = client.get("/api/images").get_json()
    samples = [image["id"] for image in images if image["set"] == "samples"]
    assert len(samples) >= 4
    page = client.get(f"/run?model={by_name['shapes_cnn']['id']}&technique=saliency").get_data(as_text=True)
    assert 'name="image_sets" value="samples"' in page and f"all {len(samples)} pictures of samples" in page
    form = FormFields()
    form.feed(page)
    response = client.post("/run", data={**form.fields, "image_sets": "samples", "image_ids": str(samples[0])})
    assert response.status_code == 302
    job = client.get(f"/api/jobs/{response.headers['Location'].rstrip('/').split('/')[-1]}").get_json()
    assert job["image_ids"] == samples
    audit = client.post(
        f"/models/{by_name['shapes_cnn']['id']}/audit", data={"csrf_token": form.fields["csrf_token"], "techniques": "saliency", "image_sets": "samples"}
    )
    assert audit.status_code == 302
    report = client.get(f"/api/reports/{audit.headers['Location'].rstrip('/').split('/')[-1]}").get_json()
    assert all(job["image_ids"] == samples for job in report["jobs"])
    set_page = client.get("/images/sets/samples").get_data(as_text=True)
    assert "Pictures per class" in set_page and f"{len(samples)} pictures" in set_page
    assert client.get("/images/sets/no-such-set").status_code == 404


def test_predictions_stay_out_of_the_job_lists_and_show_on_their_models_page(app, client):
    by_name = models(client)
    model = by_name["shapes_cnn"]
    image = client.get("/api/images").get_json()[0]
    made = client.post(f"/api/models/{model['id']}/predictions", json={"image_id": image["id"]}, headers=API)
    assert made.status_code == 202
    job = run(app, client, made.get_json()["job"]["id"])
    assert job["status"] == "done" and job["kind"] == "predict"
    listed = client.get("/jobs").get_data(as_text=True) + client.get("/").get_data(as_text=True)
    assert f'href="/jobs/{job["id"]}"' not in listed
    page = client.get(f"/models/{model['id']}").get_data(as_text=True)
    assert "What it said about recent pictures" in page and 'class="label-bars"' in page and "<meter" in page
    set_page = client.get(f"/images/sets/{image['set']}").get_data(as_text=True)
    assert f"{model['name']} said:" in set_page  # and on its picture's set page


def test_a_set_labeled_with_other_classes_is_refused_at_submission(client):
    """Robustness reads the set's labels: a picture labeled with a class the model lacks is one sentence at
    submission, not a failed job."""
    by_name = models(client)
    images = {image["name"]: image for image in client.get("/api/images").get_json()}
    page = client.get(f"/run?model={by_name['digits_linear']['id']}&technique=robustness_curve").get_data(as_text=True)
    form = FormFields()
    form.feed(page)
    response = client.post("/run", data={**form.fields, "image_ids": str(images["circle.png"]["id"])})
    text = response.get_data(as_text=True)
    assert response.status_code == 400 and "is labeled &#39;circle&#39;, which is not one of digits_linear&#39;s classes" in text
    accepted = client.post("/run", data={**form.fields, "image_ids": str(images["digit-3.png"]["id"])})
    assert accepted.status_code == 302
