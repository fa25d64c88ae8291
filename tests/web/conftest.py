from tests_web_helpers import app, browser, client, sample_ids, server, shapes_id, shots  # noqa: F401 - shared fixtures
