"""The Flask web UI and JSON API.

``create_app`` wires settings, the store, the job dispatcher (embedded runner or Celery) and security.
The web process never runs model code: uploads are stored and inspected by jobs.
"""

from __future__ import annotations

import ctypes
import hashlib

from flask import Flask, jsonify, make_response, render_template, request
from werkzeug.exceptions import HTTPException
from werkzeug.routing import IntegerConverter, ValidationError

from viz_server.config import Settings, load_settings
from viz_server.errors import NotFound, UserError
from viz_server.store import Store
from viz_server.store.database import MAX_ID
from viz_server.web import security


class RecordNumber(IntegerConverter):
    """``<int:...>`` in every route: ASCII digits only (``\\d`` would take Arabic-Indic or full-width digits),
    at most ``MAX_ID``; anything else is not an address here (404)."""

    regex = r"[0-9]{1,19}"

    def to_python(self, value: str) -> int:
        number = int(value)
        if number > MAX_ID:
            raise ValidationError()
        return number


def make_dispatcher(store: Store, settings: Settings):
    if settings.broker_url:
        from viz_server.jobs.celery_app import CeleryDispatcher

        return CeleryDispatcher(settings, store)
    from viz_server.jobs.embedded import EmbeddedRunner

    return EmbeddedRunner(store, settings)


def few_malloc_arenas(count: int = 2) -> None:
    """At most ``count`` glibc malloc arenas in this process (M_ARENA_MAX): with one arena per request thread, each
    thread would keep the memory of the largest request it served."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(-8, count)  # M_ARENA_MAX
    except (OSError, AttributeError):  # not glibc
        pass


def create_app(settings: Settings | None = None, host: str = "127.0.0.1", start_jobs: bool = True) -> Flask:
    settings = settings or load_settings()
    few_malloc_arenas()
    store = Store(settings)
    app = Flask(__name__)
    app.url_map.converters["int"] = RecordNumber
    app.config.update(
        SECRET_KEY=security.persistent_secret(settings.data_dir / "secret_key"),
        MAX_CONTENT_LENGTH=settings.max_upload_bytes,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
    )
    app.extensions["viz_store"] = store
    app.extensions["viz_settings"] = settings
    dispatcher = make_dispatcher(store, settings)
    app.extensions["viz_dispatcher"] = dispatcher
    app.extensions["viz_token"] = security.required_token(settings, host)
    security.install(app, app.extensions["viz_token"], security.host_allow_list(settings, host, app.extensions["viz_token"]))

    from viz_server.web import api, pages
    from viz_server.web.views import artifact_html, image_sets_view, metric_html, shape_html, target_choices

    app.jinja_env.globals.update(
        artifact_html=artifact_html, metric_html=metric_html, target_choices=target_choices, image_sets_view=image_sets_view, shape_html=shape_html
    )
    app.register_blueprint(pages.blueprint)
    app.register_blueprint(api.blueprint)
    _register_errors(app)
    register_shipped(store, dispatcher)
    if start_jobs:
        dispatcher.start()
    return app


def register_shipped(store: Store, dispatcher) -> None:
    """The shipped models and sample pictures are listed from the first start (once; restarts keep them)."""
    from viz_server_models import sample_images, shipped_models

    for name, path in shipped_models().items():
        data = path.read_bytes()
        if store.model_by_sha(hashlib.sha256(data).hexdigest()) is None:
            _, job = store.add_model(name, data, shipped=True)
            dispatcher.submit(job.id)
    if "samples" not in store.image_sets():
        for name, path in sample_images().items():
            label = name.split("-")[-1] if name.startswith("digit") else name.split("-")[0]  # circle-square: a circle wearing square's texture
            store.add_image(path.name, path.read_bytes(), "samples", label)


def _register_errors(app: Flask) -> None:
    def respond(status: int, message: str):
        if request.path.startswith("/api/") or request.accept_mimetypes.best == "application/json":
            return jsonify(error=message), status
        return render_template("error.html", status=status, message=message), status

    @app.errorhandler(UserError)
    def user_error(exc: UserError):
        return respond(400, str(exc))

    @app.errorhandler(NotFound)
    def not_found(exc: NotFound):
        return respond(404, str(exc.args[0]) if exc.args else "not found.")

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        messages = {
            401: "this server needs its access token; open the link the server printed at start-up.",
            404: "there is nothing at this address.",
            405: "this address does not take that kind of request.",
            413: f"the upload is larger than the {app.config['MAX_CONTENT_LENGTH'] / 2**20:.0f} MiB allowed.",
        }
        message = messages.get(exc.code) if exc.code != 400 else None
        response = make_response(respond(exc.code or 500, message or (exc.description or "bad request.")))
        for key, value in exc.get_headers():
            if key.lower() == "allow":  # a 405 names the methods the address takes
                response.headers[key] = value
        return response
