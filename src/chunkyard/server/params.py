"""PBS's parameter rules (spec §11.1): where parameters come from and how they are checked.

* GET/DELETE: the query string. POST/PUT: a form body (`application/x-www-form-urlencoded`,
  or no content type) plus the query string; or a JSON object body plus the path parameters
  only (the query string is then ignored). Other content types are refused.
* `_dc` (ExtJS's cache buster) is ignored; any other parameter the endpoint does not declare
  is an error, as is a second value for a parameter that is not an array.
* Booleans from text are `1/on/yes/true` and `0/off/no/false`, case-insensitively; from JSON
  they must be JSON booleans (integers JSON numbers), as proxmox-schema verifies.

Every problem is collected and reported at once in proxmox-schema's `ParameterError` text:
`parameter verification errors\\n\\nparameter 'x': message`, with status 400.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qsl

from chunkyard.errors import ChunkyardError

MAX_BODY_SIZE = 512 * 1024
IGNORED = frozenset({"_dc"})
_TRUE = frozenset({"1", "on", "yes", "true"})
_FALSE = frozenset({"0", "off", "no", "false"})

Kind = Literal["string", "boolean", "integer", "array"]


class ApiError(ChunkyardError):
    """An error with the HTTP status PBS answers and the message text it sends as the body."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class ParameterError(ApiError):
    """One or more parameters failed verification (HTTP 400)."""

    def __init__(self, errors: Mapping[str, str]) -> None:
        lines = "".join(f"parameter '{name}': {msg}\n" for name, msg in errors.items())
        super().__init__(f"parameter verification errors\n\n{lines}", 400)
        self.errors = dict(errors)


@dataclass(frozen=True)
class Param:
    """One declared parameter. `check` validates (and may convert) a string value, raising
    ValueError (InvalidName is one) with the message to report."""

    kind: Kind = "string"
    optional: bool = True
    default: Any = None
    minimum: int | None = None
    maximum: int | None = None
    min_length: int | None = None
    max_length: int | None = None
    pattern: re.Pattern[str] | None = None
    check: Callable[[str], Any] | None = None


def parse_boolean(text: str) -> bool:
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError("Unable to parse boolean option.")


def _convert(param: Param, value: Any, from_json: bool) -> Any:
    if param.kind == "boolean":
        if isinstance(value, bool):
            return value
        if from_json:
            raise ValueError("Expected boolean value.")
        return parse_boolean(value)
    if param.kind == "integer":
        if from_json:
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError("Expected integer value.")
            number = value
        else:
            if not re.fullmatch(r"[+-]?[0-9]{1,19}", value.strip()):
                raise ValueError(f"value '{value}' is not a valid integer.")
            number = int(value.strip())
        if param.minimum is not None and number < param.minimum:
            raise ValueError(f"value must have a minimum value of {param.minimum}")
        if param.maximum is not None and number > param.maximum:
            raise ValueError(f"value must have a maximum value of {param.maximum}")
        return number
    if not isinstance(value, str):
        raise ValueError("Expected string value.")
    if param.min_length is not None and len(value) < param.min_length:
        raise ValueError(f"value must be at least {param.min_length} characters long")
    if param.max_length is not None and len(value) > param.max_length:
        raise ValueError(f"value may only be {param.max_length} characters long")
    if param.pattern is not None and not param.pattern.fullmatch(value):
        raise ValueError("value does not match the regex pattern")
    if param.check is not None:
        return param.check(value)
    return value


def _verify(spec: Mapping[str, Param], raw: Mapping[str, list[Any]], from_json: bool,
            ) -> dict[str, Any]:
    errors: dict[str, str] = {}
    out: dict[str, Any] = {}
    for name, values in raw.items():
        if name in IGNORED:
            continue
        param = spec.get(name)
        if param is None:
            errors[name] = "schema does not allow additional properties."
            continue
        if param.kind == "array":
            items = values[0] if from_json and isinstance(values[0], list) else values
            try:
                out[name] = [_convert(Param(check=param.check), v, from_json) for v in items]
            except ValueError as e:
                errors[name] = str(e)
            continue
        if len(values) > 1:
            errors[name] = "duplicate parameter."
            continue
        try:
            out[name] = _convert(param, values[0], from_json)
        except ValueError as e:
            errors[name] = str(e)
    for name, param in spec.items():
        if name in out or name in errors:
            continue
        if not param.optional:
            errors[name] = "parameter is missing and it is not optional."
        else:
            out[name] = param.default
    if errors:
        raise ParameterError(errors)
    return out


def collect(spec: Mapping[str, Param], *, method: str, content_type: str | None,
            query: list[tuple[str, str]], body: bytes, path_params: Mapping[str, str],
            ) -> dict[str, Any]:
    """The verified parameters of one request (declared ones, defaults filled in)."""
    if len(body) > MAX_BODY_SIZE:
        raise ApiError("Request body too large", 413)
    raw: dict[str, list[Any]] = {}
    from_json = False
    if method in ("POST", "PUT"):
        ctype = (content_type or "").split(";", 1)[0].strip().lower()
        if ctype == "application/json":
            from_json = True
            raw = _json_object(body)
        elif ctype in ("", "application/x-www-form-urlencoded"):
            _add_pairs(raw, _form_pairs(body))
            _add_pairs(raw, query)
        else:
            raise ApiError(f"unsupported content type '{ctype}'", 400)
    else:
        _add_pairs(raw, query)
    body_spec = {k: v for k, v in spec.items() if k not in path_params}
    params = _verify(body_spec, {k: v for k, v in raw.items() if k not in path_params},
                     from_json)
    # path parameters are text even with a JSON body
    params.update(_verify({k: spec[k] for k in path_params},
                          {k: [v] for k, v in path_params.items()}, False))
    return params


def _add_pairs(raw: dict[str, list[Any]], pairs: list[tuple[str, str]]) -> None:
    for key, value in pairs:
        raw.setdefault(key, []).append(value)


def _form_pairs(body: bytes) -> list[tuple[str, str]]:
    if not body:
        return []
    try:
        text = body.decode("utf-8")
        return parse_qsl(text, keep_blank_values=True, strict_parsing=False,
                         errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise ApiError("unable to parse the form body (invalid UTF-8)", 400) from None


def _json_object(body: bytes) -> dict[str, list[Any]]:
    import json

    if not body.strip():
        return {}
    try:
        value = json.loads(body)
    except (UnicodeDecodeError, ValueError) as e:
        raise ApiError(f"unable to parse the JSON body: {e}", 400) from None
    if not isinstance(value, dict):
        raise ApiError("the JSON body must be an object", 400)
    return {str(k): [v] for k, v in value.items() if v is not None}


__all__ = ["MAX_BODY_SIZE", "ApiError", "Param", "ParameterError", "collect", "parse_boolean"]
