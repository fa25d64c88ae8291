"""Job execution: one function runs a job (``execute.execute_job``), whichever way it was dispatched.

Embedded default (``embedded.EmbeddedRunner``): a thread in the server starts each job in its own process,
with a concurrency limit, a timeout and bounded retries. Scale-out (``celery_app``): Celery workers on other
machines, sharing the database and the blob folder, chosen by setting VIZ_SERVER_BROKER_URL.
"""
