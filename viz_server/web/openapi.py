"""The JSON API's OpenAPI 3.1 description, served at ``GET /api/openapi.json`` (for clients, and for fuzzing the
API against it). A test checks that every ``/api`` route is described here."""

from __future__ import annotations

from typing import Any

import viz_server
from viz_server.model.spec import SPEC_FIELDS

ERROR = {"description": "bad input, in one sentence", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
NOT_FOUND = {"description": "no such record", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
ID = {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}
IDS = {"type": "array", "items": ID, "maxItems": 1000}


def _ok(description: str, status: str = "200") -> dict[str, Any]:
    return {status: {"description": description, "content": {"application/json": {"schema": {}}}}, "400": ERROR, "403": ERROR}


def _id_parameter(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": ID}


def _json(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": {"type": "object", "properties": properties, "required": list(required)}}}}


def _multipart(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"required": True, "content": {"multipart/form-data": {"schema": {"type": "object", "properties": properties, "required": list(required)}}}}


SPEC_PROPERTIES = {name: {"type": "string", "description": field.help} for name, field in SPEC_FIELDS.items()}


def _deletion(parameter: str, what: str) -> dict[str, Any]:
    return {
        "summary": f"delete {what}; refused (400, nothing changes) while one of those jobs is queued or running",
        "parameters": [_id_parameter(parameter)],
        "responses": {**_ok("what was deleted: kind, name, jobs, reports"), "400": {"description": "one sentence"}, "404": NOT_FOUND},
    }


def openapi() -> dict[str, Any]:
    paths: dict[str, Any] = {
        "/api/openapi.json": {"get": {"summary": "this description", "responses": {"200": {"description": "OpenAPI 3.1"}}}},
        "/api/plugins": {"get": {"summary": "installed plugins, their hooks, techniques and params schemas", "responses": _ok("plugins")}},
        "/api/models": {
            "get": {"summary": "models with spec, decoder, conversion report and layers", "responses": _ok("models")},
            "post": {
                "summary": "store a model and queue its inspection",
                "requestBody": _multipart({"model": {"type": "string", "format": "binary"}, "name": {"type": "string"}, **SPEC_PROPERTIES}, ("model",)),
                "responses": _ok("the model and its inspection job", "202"),
            },
        },
        "/api/models/{model_id}": {
            "get": {"summary": "one model", "parameters": [_id_parameter("model_id")], "responses": {**_ok("the model"), "404": NOT_FOUND}},
            "delete": _deletion("model_id", "a model (not a shipped one), with its jobs and the reports they leave empty"),
        },
        "/api/images/{image_id}": {"delete": _deletion("image_id", "an image, with the jobs made from it and the reports they leave empty")},
        "/api/models/{model_id}/spec": {
            "post": {
                "summary": "save spec overrides and re-inspect",
                "parameters": [_id_parameter("model_id")],
                "requestBody": _json(SPEC_PROPERTIES),
                "responses": {**_ok("the inspection job", "202"), "404": NOT_FOUND},
            }
        },
        "/api/models/{model_id}/predictions": {
            "post": {
                "summary": "run the model once on a stored image and decode what it says",
                "parameters": [_id_parameter("model_id")],
                "requestBody": _json({"image_id": ID}, ("image_id",)),
                "responses": {**_ok("the prediction job", "202"), "404": NOT_FOUND},
            }
        },
        "/api/images": {
            "get": {"summary": "pictures", "parameters": [{"name": "set", "in": "query", "schema": {"type": "string"}}], "responses": _ok("images")},
            "post": {
                "summary": "store pictures, or a .zip of class folders, all or none",
                "requestBody": _multipart(
                    {"images": {"type": "array", "items": {"type": "string", "format": "binary"}}, "set": {"type": "string"}, "label": {"type": "string"}},
                    ("images",),
                ),
                "responses": _ok("the stored images", "201"),
            },
        },
        "/api/jobs": {
            "get": {"summary": "the newest 200 jobs, without results", "responses": _ok("jobs")},
            "post": {
                "summary": "run a technique",
                "requestBody": _json(
                    {
                        "technique": {"type": "string"},
                        "model_id": ID,
                        "image_ids": IDS,
                        "params": {"type": "object"},
                        "seed": {"type": "integer", "minimum": 0, "maximum": 2**31 - 1},
                        "second_image_id": ID,
                    },
                    ("technique", "model_id"),
                ),
                "responses": {**_ok("the job", "202"), "404": NOT_FOUND},
            },
        },
        "/api/jobs/{job_id}": {
            "get": {"summary": "status, progress and result", "parameters": [_id_parameter("job_id")], "responses": {**_ok("the job"), "404": NOT_FOUND}}
        },
        "/api/jobs/{job_id}/cancel": {
            "post": {"summary": "cancel a job", "parameters": [_id_parameter("job_id")], "responses": {**_ok("the job"), "404": NOT_FOUND}}
        },
        "/api/audits": {
            "post": {
                "summary": "one report of several techniques on one model",
                "requestBody": _json(
                    {"model_id": ID, "techniques": {"type": "array", "items": {"type": "string"}}, "image_ids": IDS, "second_image_id": ID},
                    ("model_id", "techniques"),
                ),
                "responses": {**_ok("the report", "202"), "404": NOT_FOUND},
            }
        },
        "/api/comparisons": {
            "post": {
                "summary": "one technique on several models",
                "requestBody": _json(
                    {"model_ids": IDS, "technique": {"type": "string"}, "image_ids": IDS, "params": {"type": "object"}}, ("model_ids", "technique")
                ),
                "responses": {**_ok("the report", "202"), "404": NOT_FOUND},
            }
        },
        "/api/reports": {
            "get": {
                "summary": "reports, newest first, 50 a page (total in X-Total-Count)",
                "parameters": [{"name": "page", "in": "query", "schema": {"type": "integer", "minimum": 1}}],
                "responses": _ok("reports"),
            }
        },
        "/api/reports/{report_id}": {
            "get": {
                "summary": "a report with its jobs and summary sections",
                "parameters": [_id_parameter("report_id")],
                "responses": {**_ok("the report"), "404": NOT_FOUND},
            },
            "delete": _deletion("report_id", "a report with its jobs"),
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "viz-server",
            "version": viz_server.__version__,
            "description": 'Writes need an X-Requested-With header (any value) or a Bearer token. Every error is {"error": "one sentence"}.',
        },
        "paths": paths,
        "components": {"schemas": {"Error": {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}}},
    }
