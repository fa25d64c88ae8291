"""The Flask web UI (server-rendered). This first version lists plugins, techniques and shipped models."""

from __future__ import annotations

from flask import Flask, jsonify, render_template


def create_app() -> Flask:
    app = Flask(__name__)

    @app.after_request
    def security_headers(response):
        response.headers["Content-Security-Policy"] = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        return response

    @app.get("/")
    def index():
        from viz_server.plugins import describe_plugins
        from viz_server_models import shipped_models

        return render_template("index.html", plugins=describe_plugins(), models=sorted(shipped_models()))

    @app.get("/api/plugins")
    def api_plugins():
        from viz_server.plugins import describe_plugins

        return jsonify(describe_plugins())

    return app
