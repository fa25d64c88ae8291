"""End to end in a real browser: Playwright driving Debian's headless Chromium against `viz-server serve`.

Screenshots of every page land in $VIZ_SCREENSHOTS (default: the test's temporary folder).
"""

import pytest
from tests_web_helpers import BROWSER_TESTS

pytestmark = BROWSER_TESTS


@pytest.fixture
def page(browser):
    context = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    dialogs = []
    opened.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    opened.dialogs = dialogs
    yield opened
    context.close()


def _wait_text(page, selector: str, text: str, timeout: float = 120_000) -> None:
    page.wait_for_function("([s, t]) => { const e = document.querySelector(s); return e && e.textContent.includes(t); }", arg=[selector, text], timeout=timeout)


def test_upload_run_watch_and_export(server, page, shots, tmp_path):
    from viz_server_models import sample_images, shipped_models

    page.goto(server + "/models")
    page.set_input_files("input[name=model]", str(shipped_models()["shapes_cnn"]))
    page.fill("input[name=name]", "my shapes")
    page.click("button[type=submit]")
    _wait_text(page, "h1", "ready")  # the page polls the inspection job and reloads when it is done
    assert page.locator("#layers tr[data-row]").count() > 10
    page.fill("input[data-filter]", "Conv")
    assert page.locator("#layers tr[data-row]:visible").count() < page.locator("#layers tr[data-row]").count()
    page.screenshot(path=str(shots / "model.png"), full_page=True)

    page.click("text=Run a technique")
    page.set_input_files("input[name=images]", str(sample_images()["triangle"]))
    page.select_option("select[name=param_target]", "triangle")
    page.screenshot(path=str(shots / "run.png"), full_page=True)
    page.click("#run-form button[type=submit]")
    page.wait_for_url("**/jobs/*")
    progress_seen = page.locator("progress").count() > 0 or "done" in page.inner_text("h1")
    _wait_text(page, "h1", "done")
    assert progress_seen
    overlay = page.locator("img[alt='gradient saliency over the image']")
    overlay.wait_for()
    assert page.evaluate("(img) => img.complete && img.naturalWidth > 0", overlay.element_handle())
    assert "Read with care" in page.inner_text("main")
    page.screenshot(path=str(shots / "job.png"), full_page=True)

    with page.expect_download() as download_info:
        page.click("text=Export HTML report")
    exported = tmp_path / "report.html"
    download_info.value.save_as(exported)
    html = exported.read_text()
    assert html.count("data:image/png;base64,") == 6 and "gradient saliency" in html  # input, map, overlay, mask, 2 plots
    page.goto(exported.as_uri())
    assert page.evaluate("() => Array.from(document.images).every((img) => img.naturalWidth > 0)")
    page.screenshot(path=str(shots / "export.png"), full_page=True)


def test_hostile_markup_is_shown_as_text(server, page, shots, tmp_path):
    from hostile import hostile_models

    path = tmp_path / "markup.onnx"
    path.write_bytes(hostile_models()["markup_names.onnx"][0])
    page.goto(server + "/models")
    page.set_input_files("input[name=model]", str(path))
    page.fill("input[name=name]", "<img src=x onerror=alert(1)>")
    page.click("button[type=submit]")
    _wait_text(page, "h1", "ready")
    assert "<img src=x onerror=alert(1)>" in page.inner_text("h1")
    assert "<script>alert('x')</script><b>conv</b>" in page.inner_text("#layers")
    assert page.locator("main img").count() == 0 and page.dialogs == []
    page.screenshot(path=str(shots / "hostile-model.png"), full_page=True)


def test_every_page_renders(server, page, shots):
    for name in ["", "plugins", "models", "images", "run", "jobs", "reports", "compare"]:
        response = page.goto(f"{server}/{name}")
        assert response.status == 200
        page.screenshot(path=str(shots / f"page-{name or 'home'}.png"), full_page=True)
    page.goto(server + "/models/1/audit")
    page.click("button[type=submit]")  # no images chosen: a clear 400 page, not a crash
    assert "needs at least one image" in page.inner_text("#error-message")
    assert page.locator("input[name=techniques]:checked").count() >= 1  # the same form, the choices kept
    page.screenshot(path=str(shots / "error.png"), full_page=True)

    page.goto(server + "/models/2/audit")  # shapes_cnn: an audit from the browser ends in a report
    for box in page.locator("input[name=techniques]").all():
        box.uncheck()
    page.check("input[name=techniques][value=saliency]")
    page.check("input[name=techniques][value=gradcam]")
    page.check("input[name=image_ids] >> nth=0")
    page.check("input[name=image_ids] >> nth=1")
    page.screenshot(path=str(shots / "audit.png"), full_page=True)
    page.click("button[type=submit]")
    page.wait_for_url("**/reports/*")
    page.wait_for_selector("text=Export HTML (self-contained)")
    page.wait_for_function("() => !document.querySelector('[data-poll-url]')", timeout=120_000)
    assert page.locator(".status-done").count() >= 1
    page.screenshot(path=str(shots / "report.png"), full_page=True)


def test_explain_a_detection_picked_from_the_form(server, page, shots, tmp_path):
    """Run form of the shipped detector: pick a scene, see the model's detections drawn, pick detection 0,
    and get a Grad-CAM map of that detection with its box drawn."""
    import numpy as np
    from PIL import Image

    from viz_server_models import shapes

    scene = shapes.make_scene(np.random.default_rng(42), objects=(2, 2))
    path = tmp_path / "scene.png"
    Image.fromarray(scene.image).save(path)
    page.goto(server + "/images")
    page.set_input_files("input[name=images]", str(path))
    page.click("button[type=submit]")
    import time

    deadline = time.monotonic() + 120
    while True:  # the shipped models are inspected by jobs after the server starts
        detector = next(model for model in page.request.get(server + "/api/models").json() if model["name"] == "shapes_detector")
        if detector["status"] != "inspecting" or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    page.goto(f"{server}/run?model={detector['id']}&technique=gradcam")
    page.check("label.thumb:has-text('scene.png') input[name=image_ids]")
    page.wait_for_selector("[data-predictions] svg rect.detection-box", timeout=120_000)
    boxes = page.locator("[data-predictions] svg rect.detection-box").count()
    assert boxes >= 2
    offered = [
        value
        for value in page.eval_on_selector_all("select[name=param_target] option", "(options) => options.map((o) => o.value)")
        if value.startswith("detection:")
    ]
    assert offered == [f"detection:{index}" for index in range(boxes)]  # the image's own detections, in order, each once
    page.select_option("select[name=param_target]", "detection:0")
    page.screenshot(path=str(shots / "run-detection.png"), full_page=True)
    page.click("#run-form button[type=submit]")
    page.wait_for_url("**/jobs/*")
    _wait_text(page, "h1", "done")
    assert page.locator("figcaption", has_text="grad-cam for detection 0:").count() == 1
    assert page.locator("img[alt^='what is explained: detection 0']").count() == 1
    page.screenshot(path=str(shots / "job-detection.png"), full_page=True)


def test_the_report_answers_first_and_every_result_reads_well(server, page, shots):
    """An audit's first screen, a result you can enlarge with its colour scale, edit and re-run, a refused value
    beside its field, and deleting a report after a confirmation."""
    failed_requests = []
    page.on("response", lambda response: failed_requests.append(response.url) if response.status >= 400 else None)
    shapes_id = next(model["id"] for model in page.request.get(server + "/api/models").json() if model["name"] == "shapes_cnn")
    page.goto(f"{server}/models/{shapes_id}/audit")
    for box in page.locator("input[name=techniques]").all():
        box.uncheck()
    page.check("input[name=techniques][value=saliency]")
    page.check("input[name=techniques][value=gradcam]")
    page.check("input[name=image_ids] >> nth=0")
    page.click("button[type=submit]")
    page.wait_for_url("**/reports/*")
    page.wait_for_function("() => !document.querySelector('[data-poll-url]')", timeout=180_000)
    assert page.locator("main section.card").first.locator("h2").inner_text() == "Summary"
    first_screen = page.evaluate("() => document.querySelector('nav.contents').getBoundingClientRect().top") < 900 * 2
    assert first_screen and page.locator("nav.contents li").count() >= 3 and page.locator("details.job-section").count() == 2
    assert "worst relative difference from onnxruntime" in page.inner_text("main section.card >> nth=0")
    page.screenshot(path=str(shots / "report-first-screen.png"))
    report_url = page.url

    page.locator("details.job-section >> nth=0").locator("a.job-link").click()
    page.wait_for_url("**/jobs/*")
    heatmap = page.locator(".pictures img[alt^='gradient saliency for']").first
    assert page.locator(".colorbar").count() >= 2
    heatmap.click()
    page.wait_for_selector(".viewer img")
    assert page.evaluate("() => document.querySelector('.viewer img').getBoundingClientRect().width") > 500
    page.screenshot(path=str(shots / "job-enlarged.png"))
    page.keyboard.press("Escape")
    assert page.locator(".viewer").count() == 0
    assert page.locator("#job-parameters").count() == 1

    page.click("#rerun")
    page.wait_for_url("**/run?rerun=*")
    assert page.input_value("input[name=param_smooth_samples]") == "0" and page.locator("input[name=image_ids]:checked").count() == 1
    page.evaluate("() => { document.getElementById('run-form').noValidate = true; }")
    page.fill("input[name=param_smooth_samples]", "-5")
    page.click("#run-form button[type=submit]")
    page.wait_for_selector(".field-error")
    assert "below its minimum" in page.inner_text("label.param.invalid") and page.input_value("input[name=param_smooth_samples]") == "-5"
    page.screenshot(path=str(shots / "run-refused.png"), full_page=True)
    before = page.url
    page.select_option("form.inline select[name=technique]", "gradcam")
    assert page.url == before  # choosing never submits (a keyboard user moves through the list with arrow keys)
    page.click("text=Show its form")
    page.wait_for_url("**technique=gradcam**")
    assert page.locator("select[name=param_layer]").count() == 1

    page.goto(report_url)
    page.click("a.delete")
    page.wait_for_selector("#confirm-delete")
    assert "2 jobs made from it" in page.inner_text("main")
    page.screenshot(path=str(shots / "delete-confirm.png"))
    page.click("#confirm-delete")
    page.wait_for_url("**/reports")
    assert page.request.get(report_url.replace("/reports/", "/api/reports/")).status == 404
    assert not [url for url in failed_requests if "favicon" in url or "/static/" in url], failed_requests


def test_a_classifiers_prediction_reads_as_label_bars_and_stays_out_of_the_job_list(server, page, shots):
    shapes_id = next(model["id"] for model in page.request.get(server + "/api/models").json() if model["name"] == "shapes_cnn")
    page.goto(f"{server}/run?model={shapes_id}&technique=saliency")
    page.check("label.thumb:has-text('triangle.png') input[name=image_ids]")
    page.wait_for_selector("[data-predictions] ol.label-bars li", timeout=120_000)
    rows = page.locator("[data-predictions] ol.label-bars li").all_inner_texts()
    assert len(rows) >= 2 and rows[0].startswith("triangle") and rows[0].strip().endswith("%"), rows
    assert page.locator("[data-predictions] pre").count() == 0  # no raw JSON
    page.screenshot(path=str(shots / "run-prediction.png"), full_page=True)
    page.goto(f"{server}/jobs")
    assert "predict" not in page.inner_text("main table")
    page.goto(f"{server}/models/{shapes_id}")
    assert page.locator("#predictions ol.label-bars").count() >= 1


def test_a_dropped_picture_is_uploaded_at_once_and_confirmed(server, page, tmp_path):
    from viz_server_models import sample_images

    data = list(sample_images()["circle"].read_bytes())
    page.goto(server + "/images")
    page.evaluate(
        """(bytes) => {
          const transfer = new DataTransfer();
          transfer.items.add(new File([new Uint8Array(bytes)], 'dropped.png', {type: 'image/png'}));
          const zone = document.querySelector('[data-dropzone]');
          zone.dispatchEvent(new DragEvent('drop', {dataTransfer: transfer, bubbles: true, cancelable: true}));
        }""",
        data,
    )
    page.wait_for_selector("p.confirmed")
    assert page.inner_text("p.confirmed") == "Added 1 picture to uploads."
    assert page.locator("figure.thumb", has_text="dropped.png").count() >= 1
