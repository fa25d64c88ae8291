"""The first web page: plugins and shipped models are listed, with security headers."""

from viz_server.web import create_app


def test_index_lists_plugins_and_models():
    client = create_app().test_client()
    page = client.get("/")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert "saliency" in text and "shapes_cnn" in text and "digits_linear" in text
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Content-Type-Options"] == "nosniff"


def test_api_plugins_is_json():
    client = create_app().test_client()
    listed = client.get("/api/plugins").get_json()
    assert any(t["name"] == "saliency" for p in listed for t in p["techniques"])
