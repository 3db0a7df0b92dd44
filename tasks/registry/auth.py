"""The team's tracking server app: MLflow's basic auth, and only MANAGE moves the release aliases.

`mlflow server --app-name edgecompress-auth` (registered under the `mlflow.app` entry points in
pyproject.toml) serves MLflow's own basic-auth app with one rule added. In MLflow's permissions,
registering a version and setting any alias of a registered model both need EDIT on it, so the
account that registers could also move `champion`. Here, setting or deleting `champion` or
`previous-champion` (in any letter case) and renaming a registered model need MANAGE on it; EDIT
still registers versions and moves `candidate`. Renaming is in the rule because a rename carries
every alias away and frees the name for a new model whose creator would hold MANAGE.

The rule runs after MLflow's own authorization (which has already refused anything short of EDIT)
and before the request's handler, reading the request with the handler's own parser and judging
the permission with MLflow's own resolver, so it sees the alias and the grants the handler acts on.
Admins pass, as they pass MLflow's checks. docs/ARCHITECTURE.md, "The team setup", says why this
and not a second registered model.
"""

from __future__ import annotations

from typing import Any

from tasks.registry.register import CHAMPION, PREVIOUS

# What only an account with MANAGE on the registered model may move.
RELEASE_ALIASES = frozenset({CHAMPION, PREVIOUS})


def create_app() -> Any:
    """MLflow's basic-auth app with the release rule; what `mlflow server --app-name edgecompress-auth` serves."""
    from mlflow.server import app
    from mlflow.server.auth import create_app as basic_auth
    from mlflow.server.handlers import catch_mlflow_exception

    served = basic_auth(app)  # registers MLflow's authentication and authorization first
    app.before_request(catch_mlflow_exception(release_rule))
    return served


def release_rule() -> None:
    """Refuse (403) a move of a release alias, or a rename, by an account without MANAGE on the model."""
    from flask import current_app, request
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import PERMISSION_DENIED
    from mlflow.protos.model_registry_pb2 import (
        DeleteRegisteredModelAlias,
        RenameRegisteredModel,
        SetRegisteredModelAlias,
    )
    from mlflow.server.handlers import _get_request_message, get_handler

    view = current_app.view_functions.get(request.endpoint) if request.endpoint else None
    if view is None:
        return
    if view is get_handler(RenameRegisteredModel):
        name, what = _get_request_message(RenameRegisteredModel()).name, "renaming a registered model"
    else:
        for kind in (SetRegisteredModelAlias, DeleteRegisteredModelAlias):
            if view is get_handler(kind):
                message = _get_request_message(kind())
                if message.alias.lower() not in RELEASE_ALIASES:
                    return  # `candidate` and the team's own aliases: MLflow's EDIT rule stands
                name, what = message.name, f"moving {message.alias!r}"
                break
        else:
            return
    if _may_manage(name):
        return
    raise MlflowException(
        f"{what} needs MANAGE on registered model {name!r} (edgecompress release rule); EDIT registers "
        "versions and moves other aliases",
        error_code=PERMISSION_DENIED,
    )


def _may_manage(name: str) -> bool:
    """Whether the request's account is an admin or holds MANAGE on `name` (a model that does not exist passes:
    its handler answers that it does not)."""
    from mlflow.exceptions import MlflowException
    from mlflow.server import auth

    if auth.sender_is_admin():
        return True
    try:
        permission = auth._get_registered_model_or_prompt_permission(name)
    except MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            return True
        raise
    return bool(permission.can_manage)
