"""Settings at the edge: pydantic-settings objects that double as command-line flags.

Each component declares one frozen `BaseSettings` class whose fields carry a description. The
CLI turns the fields it names into flags (`--batch-size` for `batch_size`) whose help ends with
the environment variable that also sets it, and builds the settings object once in `run()`:
flags given on the command line win over `SENTISTREAM_*` variables, which win over defaults.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, TypeVar, get_args, get_origin

from pydantic import AliasChoices, Field, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict

from sentistream.errors import UsageError

S = TypeVar("S", bound=BaseSettings)


class LogSettings(BaseSettings):
    """How a long-running command logs (env: SENTISTREAM_JSON_LOGS); its flag is the command's `--json-logs`."""

    model_config = SettingsConfigDict(env_prefix="SENTISTREAM_", frozen=True, extra="ignore")

    json_logs: bool = Field(False, description="log one JSON object per line")


def env_name(cls: type[BaseSettings], field: str) -> str:
    """The environment variable that sets `field` of `cls` (the first of `env_names`)."""
    return env_names(cls, field)[0]


def env_names(cls: type[BaseSettings], field: str) -> list[str]:
    """Every environment variable that sets `field` of `cls`: the current name first, then the older
    one `Renamed.older_env` still honours for deployments written before the setting moved.

    A setting that classes of several prefixes share (the contract's, `stream.settings`) names its
    variable itself (`validation_alias="SENTISTREAM_..."`, with `populate_by_name=True` so that code
    and flags still set it by field name)."""
    alias = cls.model_fields[field].validation_alias
    if isinstance(alias, AliasChoices):
        current = [str(choice).upper() for choice in alias.choices]
    elif isinstance(alias, str):
        current = [alias.upper()]
    else:
        current = [f"{cls.model_config.get('env_prefix', '')}{field}".upper()]
    older = getattr(cls, "older_env", {}).get(field)
    return [*current, older] if older else current


class Renamed(BaseSettings):
    """Base of a settings class some of whose variables were renamed when the setting moved to its one
    owner: `older_env` maps such a field to its older variable, which still sets it when neither a flag
    nor the current variable does (`--help` names both)."""

    older_env: ClassVar[dict[str, str]] = {}

    @model_validator(mode="before")
    @classmethod
    def _older_variables(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not cls.older_env:
            return data
        given = {str(key).upper() for key in data}
        older = {
            field: os.environ[variable]
            for field, variable in cls.older_env.items()
            if variable in os.environ and not given & {field.upper(), env_name(cls, field)}
        }
        return {**data, **older}


def add_settings_arguments(
    parser: argparse.ArgumentParser,
    cls: type[BaseSettings],
    fields: Iterable[str] | None = None,
    flags: Mapping[str, str] | None = None,
    old_flags: Mapping[str, Iterable[str]] | None = None,
) -> None:
    """Add one `--flag` per settings field; defaults stay None so unset flags defer to the env.

    `flags` renames some fields' flags (`{"port": "--kafka-port"}`), for a command that takes the
    same field of two owners (the demo's ports); pass the same mapping to `settings_from_args`.
    `old_flags` keeps older spellings working (`{"stats_window_s": ["--window-s"]}`).
    """
    for name in fields or cls.model_fields:
        info = cls.model_fields[name]
        flag = flag_name(name, flags)
        spellings = [flag, *(old_flags or {}).get(name, ())]
        older_env = env_names(cls, name)[1:]
        also = f"; also {', '.join(older_env)}, its older name" if older_env else ""
        help_text = f"{info.description or name} ({_default_text(info)}{also}) [env: {env_name(cls, name)}]"
        dest = _dest(flag)
        if _plain_type(info.annotation) is bool:
            parser.add_argument(
                *spellings, dest=dest, default=None, help=help_text, action=argparse.BooleanOptionalAction
            )
        else:
            parser.add_argument(*spellings, dest=dest, default=None, help=help_text, metavar=name.upper())


def settings_from_args(
    cls: type[S], args: argparse.Namespace, flags: Mapping[str, str] | None = None, **overrides: Any
) -> S:
    """Build `cls` from the environment, then the flags the user actually gave, then `overrides`."""
    values = vars(args)
    given = {f: values.get(_dest(flag_name(f, flags))) for f in cls.model_fields}
    given = {f: v for f, v in given.items() if v is not None} | overrides
    try:
        return cls(**given)
    except ValidationError as exc:
        first = exc.errors()[0]
        if not first["loc"]:  # a check across fields: its message names the flags itself
            raise UsageError(first["msg"].removeprefix("Value error, ")) from None
        field = ".".join(str(p) for p in first["loc"])
        raise UsageError(
            f"invalid {flag_name(field, flags)} / {env_name(cls, field)}: {first['msg']}"
        ) from None


def flag_name(field: str, flags: Mapping[str, str] | None = None) -> str:
    """The command-line flag of a settings field: `--batch-size` for `batch_size` unless renamed."""
    return (flags or {}).get(field) or "--" + field.replace("_", "-")


def _dest(flag: str) -> str:
    return flag.removeprefix("--").replace("-", "_")


def _default_text(info: FieldInfo) -> str:
    if info.is_required():
        return "required"
    default = info.default_factory() if info.default_factory else info.default  # type: ignore[call-arg]
    return f"default: {default}"


def _plain_type(annotation: Any) -> Any:
    """`bool | None` -> bool, so Optional flags keep their on/off form."""
    if get_origin(annotation) is None:
        return annotation
    args = [a for a in get_args(annotation) if a is not type(None)]
    return args[0] if len(args) == 1 else annotation
