from tests_web_helpers import app, client, sample_ids, shapes_id  # noqa: F401 - shared fixtures
