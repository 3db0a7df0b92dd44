"""The team's tracking server app is what `mlflow server --app-name edgecompress-auth` finds.

What the app refuses and allows is shown on a real server by tests/integration (the pipeline's
account may not move champion, the release owner's may); this checks, without one, that the
installed project registers the app where `mlflow server` looks for it.
"""

from __future__ import annotations

from mlflow.server import _find_app, _is_factory


def test_mlflow_server_finds_the_release_app_as_a_factory() -> None:
    app = _find_app("edgecompress-auth")  # the `mlflow.app` entry points, as `mlflow server` reads them
    assert app == "tasks.registry.auth:create_app"
    assert _is_factory(app)  # mlflow server then calls it once per worker
