"""Prefect wiring of the tasks/ stages, and the `edgecompress` command."""

import os

# Defaults for running with Prefect's embedded (ephemeral) server on a small machine; any value
# the user sets wins. On 2 cores the server can take over 20 s to start, and it must not try
# to send analytics from a machine that may have no network.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# Domain code logs through `logging.getLogger("tasks.<module>")`; show it in Prefect's logs too.
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "tasks")
# ...and when that code runs outside a flow (`edgecompress stage`, a notebook), log locally only.
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
