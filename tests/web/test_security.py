"""Access token, CSRF, cookies, headers, upload limits and artifact paths."""

import io

import pytest
from tests_web_helpers import API, csrf

from viz_server.config import load_settings
from viz_server.web import create_app

pytestmark = pytest.mark.slow  # real servers and job processes


@pytest.fixture(scope="module")
def public_app(tmp_path_factory):
    settings = load_settings(data_dir=tmp_path_factory.mktemp("public"), max_upload_bytes=4096)
    application = create_app(settings, host="0.0.0.0", start_jobs=False)
    yield application


def test_non_loopback_bind_requires_the_token(public_app):
    token = public_app.extensions["viz_token"]
    assert token and len(token) >= 24
    client = public_app.test_client()
    assert client.get("/models").status_code == 401
    assert "access token" in client.get("/api/models").get_json()["error"]
    assert client.get("/api/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/api/models", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    signed_in = client.get(f"/models?token={token}")
    assert signed_in.status_code == 302 and "token" not in signed_in.headers["Location"]
    assert client.get("/models").status_code == 200  # the session now carries the sign-in
    cookie = signed_in.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie


def test_token_is_kept_across_restarts(public_app, tmp_path):
    settings = public_app.extensions["viz_settings"]
    again = create_app(settings, host="0.0.0.0", start_jobs=False)
    assert again.extensions["viz_token"] == public_app.extensions["viz_token"]


def test_loopback_needs_no_token(client):
    assert client.get("/models").status_code == 200


def test_forms_need_the_csrf_token(client):
    response = client.post("/models", data={"name": "x"})
    assert response.status_code == 400 and "reload the page" in response.get_data(as_text=True)
    response = client.post("/models", data={"csrf_token": "forged"})
    assert response.status_code == 400


@pytest.mark.parametrize("authorization", [None, "Basic dXNlcjpwYXNz", "garbage", "Bearer anything"])
def test_api_writes_need_a_non_form_header(client, authorization):
    """On loopback without a token, an Authorization header of any kind is no substitute for X-Requested-With."""
    headers = {"Authorization": authorization} if authorization else {}
    response = client.post("/api/jobs", json={}, headers=headers)
    assert response.status_code == 403 and "X-Requested-With" in response.get_json()["error"]


def test_security_headers(client):
    headers = client.get("/").headers
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"] and "'unsafe-inline'" not in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff" and headers["X-Frame-Options"] == "DENY"


def test_upload_limit_is_413_with_a_sentence(public_app):
    client = public_app.test_client()
    token = public_app.extensions["viz_token"]
    response = client.post(
        "/api/models", data={"model": (io.BytesIO(b"x" * 10000), "big.onnx")}, headers={"Authorization": f"Bearer {token}"}, content_type="multipart/form-data"
    )
    assert response.status_code == 413 and "larger than" in response.get_json()["error"]


@pytest.mark.parametrize(
    "path", ["/jobs/1/artifacts/..%2F..%2Fsecret_key", "/jobs/1/artifacts/../../secret_key", "/jobs/1/arrays/..%2Fx.npy", "/images/1/../../secret_key"]
)
def test_artifact_urls_cannot_leave_the_store(app, client, path):
    secret = (app.extensions["viz_settings"].data_dir / "secret_key").read_bytes()
    response = client.get(path)
    assert response.status_code in (404, 400)
    assert secret not in response.data


def test_blob_paths_only_for_digests(app):
    store = app.extensions["viz_store"]
    with pytest.raises(KeyError):
        store.blobs.path("../../secret_key")
    with pytest.raises(KeyError):
        store.blobs.path("a" * 63 + "/")


def test_form_upload_of_hostile_model_is_stored_and_fails_cleanly(client):
    from hostile import hostile_models
    from tests_web_helpers import wait_for

    token = csrf(client)
    data = hostile_models()["external_data.onnx"][0]
    response = client.post("/models", data={"csrf_token": token, "model": (io.BytesIO(data), "evil.onnx")}, content_type="multipart/form-data")
    assert response.status_code == 302
    model = wait_for(client, "/api" + response.headers["Location"])
    assert model["status"] == "failed" and "external file" in model["error"]
    before = client.get("/api/models").get_json()
    assert all(m["status"] == "ready" for m in before if m["shipped"])  # nothing stored was lost
    assert client.post("/api/jobs", json={"technique": "saliency", "model_id": model["id"], "image_ids": [1]}, headers=API).status_code == 400


@pytest.fixture(scope="module")
def loopback_app(tmp_path_factory):
    application = create_app(load_settings(data_dir=tmp_path_factory.mktemp("loopback")), start_jobs=False)
    application.config["TESTING"] = True
    return application


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "127.0.0.1.evil.example", "10.0.0.5"])
def test_a_tokenless_server_answers_only_to_its_own_names(loopback_app, host):
    """DNS rebinding: a page on evil.example re-pointed at 127.0.0.1 sends Host: evil.example."""
    client = loopback_app.test_client()
    response = client.get("/api/models", headers={"Host": host})
    assert response.status_code == 403 and "answers only to" in response.get_json()["error"]
    before = len(client.get("/api/reports", headers={"Host": "127.0.0.1"}).get_json())
    refused = client.post("/api/audits", json={"model_id": 1, "techniques": ["filters"]}, headers={**API, "Host": host})
    assert refused.status_code == 403 and len(client.get("/api/reports").get_json()) == before
    for allowed in ("127.0.0.1", "127.0.0.1:8000", "localhost:9", "[::1]:8000"):
        assert client.get("/api/models", headers={"Host": allowed}).status_code == 200


def test_state_changing_requests_from_another_origin_are_refused(loopback_app):
    client = loopback_app.test_client()
    for origin in (
        "https://evil.example",
        "null",
        "http://127.0.0.1.evil.example:8000",
        "http://localhost:8000@evil.test",
        "http://localhost@evil.test",
        "http://localhost:8000/path",
        "ftp://localhost",
        "http://localhost:port",
    ):
        response = client.post("/api/models/1/spec", json={"labels": "a"}, headers={**API, "Origin": origin})
        assert response.status_code == 403 and "another web site" in response.get_json()["error"]
    assert client.post("/api/models/1/spec", json={"layout": "NCHW"}, headers={**API, "Origin": "http://localhost:8000"}).status_code in (202, 404)


def test_allowed_hosts_are_configurable(tmp_path, monkeypatch):
    monkeypatch.setenv("VIZ_SERVER_ALLOWED_HOSTS", "viz.internal, Other.Example")
    application = create_app(load_settings(data_dir=tmp_path), start_jobs=False)
    client = application.test_client()
    assert client.get("/api/models", headers={"Host": "viz.internal:8000"}).status_code == 200
    assert client.get("/api/models", headers={"Host": "other.example"}).status_code == 200
    assert client.get("/api/models", headers={"Host": "evil.example"}).status_code == 403
