"""Airbyte's own API models as the contract of the loopback Airbyte API (`airbyte_api.py`).

`airbyte-api` is Airbyte's Python client, generated from the public API's OpenAPI document:
a dataclass per request and response body, a dataclass per operation's query parameters.
The stand-in checks every body it receives or sends, and every query, against the model of
its endpoint (`ENDPOINTS`). The client's own parse (`airbyte_api.utils.unmarshal_json`) is
lenient: it ignores unknown fields, keeps a string where an int is due and decodes a
connector configuration as the first of ~550 union members that does not raise. So the
models are also walked field by field: required fields, JSON types, enum values, the
`sourceType` / `destinationType` / `storage` discriminators, and no field the model lacks
(unless it allows extra properties). The configuration API (`/api/v1`) and the token
endpoint have no model in the client and are not checked here.
"""

import dataclasses
import enum
import json
from datetime import datetime
from functools import cache
from typing import Any, Final, NamedTuple, Union, get_args, get_origin, get_type_hints

from airbyte_api import api, models, utils


class Endpoint(NamedTuple):
    request: type | None  # the JSON body's model
    response: type  # the 200 answer's model
    query: type | None = None  # the operation's request dataclass, for its query parameters


# (method, path under /api/public/v1 with `{id}` for the id) -> the client's models, as its
# operations use them (e.g. `Sources.patch_source`: SourcePatchRequest in, SourceResponse out)
ENDPOINTS: dict[tuple[str, str], Endpoint] = {
    ("GET", "workspaces/{id}"): Endpoint(None, models.WorkspaceResponse),
    ("GET", "sources"): Endpoint(None, models.SourcesResponse, api.ListSourcesRequest),
    ("POST", "sources"): Endpoint(models.SourceCreateRequest, models.SourceResponse),
    ("GET", "sources/{id}"): Endpoint(None, models.SourceResponse),
    ("PATCH", "sources/{id}"): Endpoint(models.SourcePatchRequest, models.SourceResponse),
    ("GET", "destinations"): Endpoint(
        None, models.DestinationsResponse, api.ListDestinationsRequest
    ),
    ("POST", "destinations"): Endpoint(models.DestinationCreateRequest, models.DestinationResponse),
    ("GET", "destinations/{id}"): Endpoint(None, models.DestinationResponse),
    ("PATCH", "destinations/{id}"): Endpoint(
        models.DestinationPatchRequest, models.DestinationResponse
    ),
    ("GET", "connections"): Endpoint(None, models.ConnectionsResponse, api.ListConnectionsRequest),
    ("POST", "connections"): Endpoint(models.ConnectionCreateRequest, models.ConnectionResponse),
    ("GET", "connections/{id}"): Endpoint(None, models.ConnectionResponse),
    ("PATCH", "connections/{id}"): Endpoint(
        models.ConnectionPatchRequest, models.ConnectionResponse
    ),
    ("POST", "jobs"): Endpoint(models.JobCreateRequest, models.JobResponse),
    ("GET", "jobs"): Endpoint(None, models.JobsResponse, api.ListJobsRequest),
    ("GET", "jobs/{id}"): Endpoint(None, models.JobResponse),
    ("DELETE", "jobs/{id}"): Endpoint(None, models.JobResponse),
}


def endpoint(method: str, path: str) -> Endpoint | None:
    """The models of `method path` (path under the REST API's base, e.g. `/jobs/7`)."""
    parts = [p for p in path.split("/") if p]
    return ENDPOINTS.get((method, "/".join(parts[:1] + ["{id}"] * (len(parts) > 1))))


@cache
def _fields(model: type) -> dict[str, tuple[dataclasses.Field, Any]]:
    """A model's fields by their JSON name, with their resolved types."""
    hints = get_type_hints(model)
    fields = {}
    for f in dataclasses.fields(model):
        case = f.metadata.get("dataclasses_json", {}).get("letter_case")
        fields[case(f.name) if case else f.name] = (f, hints[f.name])
    return fields


def _name(typ: Any) -> str:
    return getattr(typ, "__name__", str(typ))


def problems(value: Any, typ: Any, where: str = "body") -> list[str]:
    """Where the decoded JSON `value` breaks `typ` (a model or a field's type); [] if nowhere."""
    origin, args = get_origin(typ), get_args(typ)
    if typ is Any:
        return []
    if origin is Union:
        if value is None and type(None) in args:
            return []
        # a union matches when one member does; else report the closest member's problems
        found = [problems(value, member, where) for member in args if member is not type(None)]
        return [] if any(not p for p in found) else min(found, key=len)
    if value is None:
        return [f"{where}: null, {_name(typ)} expected"]
    if dataclasses.is_dataclass(typ):
        if not isinstance(value, dict):
            return [f"{where}: {value!r} is not an object ({_name(typ)})"]
        fields, found = _fields(typ), []
        for key, (f, hint) in fields.items():
            here = f"{where}.{key}"
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            if key not in value:
                found += [f"{here}: required by {_name(typ)}, missing"] if required else []
            elif get_origin(hint) is Final:  # a discriminator: sourceType, storage, ...
                expected = getattr(f.default, "value", f.default)
                if value[key] != expected:
                    found.append(f"{here}: {value[key]!r}, {_name(typ)} has {expected!r}")
            else:
                found += problems(value[key], hint, here)
        if "additional_properties" not in fields:  # the schema allows no other field
            found += [f"{where}.{k}: not a field of {_name(typ)}" for k in value if k not in fields]
        return found
    if isinstance(typ, type) and issubclass(typ, enum.Enum):
        allowed = [e.value for e in typ]
        return [] if value in allowed else [f"{where}: {value!r} is not one of {allowed}"]
    if origin is list:
        if not isinstance(value, list):
            return [f"{where}: {value!r} is not an array"]
        return [p for i, item in enumerate(value) for p in problems(item, args[0], f"{where}[{i}]")]
    if origin is dict:
        if not isinstance(value, dict):
            return [f"{where}: {value!r} is not an object"]
        return [p for k, v in value.items() for p in problems(v, args[1], f"{where}.{k}")]
    json_types = {str: (str,), int: (int,), float: (int, float), bool: (bool,)}
    if typ in json_types:
        ok = isinstance(value, json_types[typ]) and (typ is bool or not isinstance(value, bool))
        return [] if ok else [f"{where}: {value!r} is not {_name(typ)}"]
    raise TypeError(f"{where}: no check for the type {typ!r}")


def body_problems(value: Any, model: type) -> list[str]:
    """`problems`, then the client's own parse of the body as `model`."""
    found = problems(value, model)
    if not found:
        try:
            utils.unmarshal_json(json.dumps(value), model)
        except Exception as error:  # whatever the client raises is a problem to report
            found.append(f"body: airbyte_api cannot parse it as {_name(model)}: {error!r}")
    return found


_QUERY_PARSERS = {int: int, bool: ["true", "false"].index, datetime: datetime.fromisoformat}


def field_names(model: type) -> set[str]:
    """The JSON names of a model's fields."""
    return set(_fields(model))


def query_problems(query: dict[str, list[str]], operation: type) -> list[str]:
    """Each query parameter must be one of the operation's, its values of the parameter's type."""
    params = {
        f.metadata["query_param"]["field_name"]: hint
        for f, hint in _fields(operation).values()
        if "query_param" in f.metadata
    }
    found = []
    for name, values in query.items():
        if name not in params:
            found.append(f"query {name}: not a parameter of {_name(operation)} ({sorted(params)})")
            continue
        hint = next(a for a in get_args(params[name]) if a is not type(None))
        item = get_args(hint)[0] if get_origin(hint) is list else hint
        parse = _QUERY_PARSERS.get(item, item)  # an enum parses its own values
        for text in values if get_origin(hint) is list else values[-1:]:
            try:
                parse(text)
            except ValueError as error:
                found.append(f"query {name}={text!r}: not {_name(item)} ({error})")
    return found
