"""The settings tables: the one reader of environment variables, the tables' coverage of the settings dataclasses,
and docs/configuration.md, whose variable tables are generated from them.

No model, no moto: plain parsing, in milliseconds.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from diarization.aws.settings import AWS_TABLE, AwsSettings
from diarization.aws.webhooks import WEBHOOK_TABLE, WebhookSettings
from diarization.core.config import SETTINGS_TABLE, Settings
from diarization.core.environment import (
    FALSE_WORDS,
    TRUE_WORDS,
    Kind,
    Table,
    Variable,
    env_text,
    read,
    render,
    rewrite,
)
from diarization.errors import ConfigurationError, UnknownFormatError
from diarization.sagemaker.server import SERVER_TABLE, ServerSettings
from infra import settings_docs

SETTINGS: list[tuple[type[Any], Table]] = [
    (Settings, SETTINGS_TABLE),
    (AwsSettings, AWS_TABLE),
    (WebhookSettings, WEBHOOK_TABLE),
    (ServerSettings, SERVER_TABLE),
]
IDS = [cls.__name__ for cls, _ in SETTINGS]


def parse_size(text: str) -> int:
    if text == "huge":
        raise UnknownFormatError(f"SIZE: {text!r} is no size we know.")
    return int(text.removesuffix("k")) * 1000


TABLE = Table(
    title="test",
    see="nowhere",
    variables=(
        Variable("NAME", "name", Kind.TEXT, "—", "Text."),
        Variable("DIR", "dir", Kind.PATH, "—", "A path."),
        Variable("PREFIX", "prefix", Kind.PREFIX, "`p/`", "A key prefix."),
        Variable("COUNT", "count", Kind.WHOLE, "`1`", "A whole number.", minimum=1),
        Variable("RATIO", "ratio", Kind.NUMBER, "`0`", "A number.", minimum=-1, below=1),
        Variable("DAYS", "days", Kind.WHOLE_PART, "`30`", "Decimals dropped.", minimum=1),
        Variable("ON", "on", Kind.FLAG, "`true`", "A flag."),
        Variable("MODE", "mode", Kind.CHOICE, "`auto`", "A choice.", choices=("auto", "fast")),
        Variable("NAMES", "names", Kind.LIST, "—", "A list."),
        Variable("SIZE", "size", Kind.PARSED, "—", "Parsed.", parse=parse_size),
    ),
)


# The reader.


def test_each_kind_is_read_into_its_type() -> None:
    env = {
        "NAME": " alice ",
        "DIR": "/models/x",
        "PREFIX": " in/ ",
        "COUNT": "3",
        "RATIO": "-0.5",
        "DAYS": "90.5",
        "ON": "yes",
        "MODE": "fast",
        "NAMES": " a, ,b ,",
        "SIZE": "4k",
    }
    values, problems = read(TABLE, env)
    assert problems == []
    assert values == {
        "name": "alice",
        "dir": Path("/models/x"),
        "prefix": "in/",
        "count": 3,
        "ratio": -0.5,
        "days": 90,
        "on": True,
        "mode": "fast",
        "names": ("a", "b"),
        "size": 4000,
    }
    assert type(values["count"]) is int and type(values["days"]) is int and type(values["ratio"]) is float


def test_unset_or_blank_leaves_the_default_but_a_blank_prefix_is_the_empty_prefix() -> None:
    assert read(TABLE, {}) == ({}, [])
    blank = {variable.name: " \t" for variable in TABLE.variables}
    assert read(TABLE, blank) == ({"prefix": ""}, [])
    assert env_text({"A": "  x "}, "A") == "x"
    assert env_text({"A": "  "}, "A") is None
    assert env_text({}, "A") is None


def test_every_problem_is_collected_in_table_order() -> None:
    env = {
        "COUNT": "two",
        "RATIO": "1",
        "DAYS": "0.5",
        "ON": "maybe",
        "MODE": "slow",
        "SIZE": "huge",
        "NAME": "fine",
    }
    values, problems = read(TABLE, env)
    assert values == {"name": "fine"}
    assert problems == [
        "COUNT='two' is not a whole number; set e.g. COUNT=1.",
        "RATIO=1 must be in [-1, 1).",
        "DAYS=0.5 must be at least 1.",
        "ON='maybe' is not true or false.",
        "MODE='slow' must be one of auto, fast.",
        "SIZE: 'huge' is no size we know.",
    ]


@pytest.mark.parametrize(
    ("bounds", "raw", "problem"),
    [
        ({"minimum": 1}, "1", None),
        ({"minimum": 1}, "0", "X=0 must be at least 1."),
        ({"minimum": 0.0}, "-1", "X=-1 must be at least 0.0."),
        ({"above": 0}, "0.001", None),
        ({"above": 0}, "0", "X=0 must be greater than 0."),
        ({"above": 0}, "-5", "X=-5 must be greater than 0."),
        ({"maximum": 100}, "100", None),
        ({"maximum": 100}, "101", "X=101 must be at most 100."),
        ({"below": 1}, "1", "X=1 must be less than 1."),
        ({"minimum": -1, "below": 1}, "-1", None),
        ({"minimum": -1, "below": 1}, "0.99", None),
        ({"minimum": -1, "below": 1}, "-1.5", "X=-1.5 must be in [-1, 1)."),
        ({"above": 0, "maximum": 900}, "900", None),
        ({"above": 0, "maximum": 900}, "0", "X=0 must be in (0, 900]."),
        ({}, "1e308", None),
        ({}, "inf", "X='inf' is not a finite number."),
        ({}, "-inf", "X='-inf' is not a finite number."),
        ({}, "nan", "X='nan' is not a finite number."),
        ({}, "fast", "X='fast' is not a number."),
        ({"example": "3600"}, "soon", "X='soon' is not a number; set e.g. X=3600."),
    ],
)
def test_number_bounds(bounds: dict[str, Any], raw: str, problem: str | None) -> None:
    table = Table("t", "nowhere", (Variable("X", "x", Kind.NUMBER, "—", "X.", **bounds),))
    values, problems = read(table, {"X": raw})
    assert problems == ([] if problem is None else [problem])
    assert ("x" in values) == (problem is None)


@pytest.mark.parametrize(
    ("bounds", "raw", "problem"),
    [
        ({"minimum": 0}, "0", None),
        ({"minimum": 0}, "-1", "N=-1 must be at least 0."),
        ({"minimum": 0}, "two", "N='two' is not a whole number; set e.g. N=1."),
        ({"minimum": 4}, "1.5", "N='1.5' is not a whole number; set e.g. N=4."),
        ({"minimum": 1, "maximum": 100}, "0", "N=0 must be in [1, 100]."),
        ({"minimum": 1, "example": "8"}, "x", "N='x' is not a whole number; set e.g. N=8."),
    ],
)
def test_whole_numbers(bounds: dict[str, Any], raw: str, problem: str | None) -> None:
    table = Table("t", "nowhere", (Variable("N", "n", Kind.WHOLE, "—", "N.", **bounds),))
    assert read(table, {"N": raw})[1] == ([] if problem is None else [problem])


def test_flags_and_choices_ignore_case() -> None:
    for word in TRUE_WORDS + FALSE_WORDS:
        for text in (word, word.upper(), f" {word.title()} "):
            assert read(TABLE, {"ON": text})[0] == {"on": word in TRUE_WORDS}
    assert read(TABLE, {"MODE": " FaSt "})[0] == {"mode": "fast"}
    assert read(TABLE, {"MODE": "FASTER"})[1] == ["MODE='FASTER' must be one of auto, fast."]


def test_a_parser_error_is_the_problem() -> None:
    assert read(TABLE, {"SIZE": "huge"})[1] == ["SIZE: 'huge' is no size we know."]
    ((problem),) = read(TABLE, {"SIZE": "big"})[1]
    assert problem.startswith("SIZE='big': invalid literal for int()")


@pytest.mark.parametrize(
    ("arguments", "mistake"),
    [
        ({"kind": Kind.TEXT, "choices": ("a",)}, "choices belong to CHOICE only"),
        ({"kind": Kind.CHOICE}, "choices belong to CHOICE only"),
        ({"kind": Kind.PARSED}, "parse belongs to PARSED only"),
        ({"kind": Kind.TEXT, "parse": str}, "parse belongs to PARSED only"),
        ({"kind": Kind.FLAG, "minimum": 1}, "bounds belong to numbers only"),
        ({"kind": Kind.TEXT, "help": "a | b"}, "help must be one line"),
        ({"kind": Kind.TEXT, "help": "a\nb"}, "help must be one line"),
    ],
)
def test_a_mistaken_declaration_is_refused(arguments: dict[str, Any], mistake: str) -> None:
    with pytest.raises(ValueError, match=mistake):
        Variable(**{"name": "V", "field": "v", "default": "—", "help": "V.", **arguments})


def test_the_error_holds_every_problem_and_where_to_read() -> None:
    error = TABLE.error(["A=1 is wrong.", "B=2 is wrong."], extra=1)
    assert isinstance(error, ConfigurationError) and error.code == "CONFIGURATION_ERROR"
    assert error.message == "Invalid configuration: A=1 is wrong. B=2 is wrong. See nowhere."
    assert error.details == {"problems": ["A=1 is wrong.", "B=2 is wrong."], "extra": 1}


# The real tables.


@pytest.mark.parametrize(
    ("cls", "env", "see"),
    [
        (Settings, {"DEVICE": "tpu", "NUM_THREADS": "-1"}, "See docs/configuration.md."),
        (AwsSettings, {"FANOUT": "sometimes", "OUTPUT_PREFIX": ""}, "See docs/configuration.md."),
        (
            WebhookSettings,
            {"WEBHOOK_MAX_ATTEMPTS": "0", "WEBHOOK_RETRY_SECONDS": "901"},
            "See docs/lambda.md#webhooks.",
        ),
        (ServerSettings, {"SAGEMAKER_BIND_TO_PORT": "0", "LOG_LEVEL": "loud"}, "See docs/configuration.md."),
    ],
    ids=IDS,
)
def test_messages_collect_problems_and_point_to_the_docs(cls: type[Any], env: dict[str, str], see: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        cls.from_env(env)
    assert len(raised.value.details["problems"]) == 2
    assert raised.value.message.endswith(see) and "README" not in raised.value.message


def test_the_real_tables_read_case_insensitively() -> None:
    settings = Settings.from_env({"DEVICE": "CUDA", "EMBEDDING_PRECISION": "FP16", "FAST_EMBEDDINGS": "NO"})
    assert (settings.device, settings.embedding_precision, settings.fast_embeddings) == ("cuda", "fp16", False)
    aws = AwsSettings.from_env({"FANOUT": "Always", "LONG_AUDIO_ROUTE": "GPU"})
    assert (aws.fanout, aws.long_audio_route) == ("always", "gpu")


def test_settings_problems_keep_their_wording() -> None:
    with pytest.raises(ConfigurationError) as raised:
        Settings.from_env({"DEVICE": "tpu", "MAX_AUDIO_SECONDS": "soon", "VOICEPRINT_THRESHOLD": "1"})
    assert raised.value.details["problems"] == [
        "DEVICE='tpu' must be one of auto, cpu, cuda.",
        "MAX_AUDIO_SECONDS='soon' is not a number; set e.g. MAX_AUDIO_SECONDS=3600.",
        "VOICEPRINT_THRESHOLD=1 must be in [-1, 1).",
    ]


def test_aws_settings_whole_parts_and_checks_after_the_table() -> None:
    settings = AwsSettings.from_env({"URL_EXPIRY_SECONDS": "90.5", "JOB_TTL_DAYS": " 7 "})
    assert (settings.url_expiry_seconds, settings.job_ttl_days) == (90, 7)
    with pytest.raises(ConfigurationError) as raised:
        AwsSettings.from_env({"URL_EXPIRY_SECONDS": "59.5", "INPUT_PREFIX": "/audio/", "DROP_VOICEPRINTS": "alice"})
    problems = raised.value.details["problems"]
    assert problems[0] == "URL_EXPIRY_SECONDS=59.5 must be at least 60."
    assert problems[1].startswith("INPUT_PREFIX='/audio/' must not start with '/'")
    assert "go together" in problems[2] and len(problems) == 3


def test_webhook_settings_read_through_the_table() -> None:
    settings = WebhookSettings.from_env(
        {
            "WEBHOOK_ALLOWED_HOSTS": "hooks.example.com",
            "WEBHOOK_SECRET_PARAMETER": "/secret",
            "WEBHOOK_QUEUE_URL": "https://queue",
            "WEBHOOK_QUEUE_ARN": "arn:queue",
            "WEBHOOK_MAX_ATTEMPTS": "3",
            "WEBHOOK_RETRY_SECONDS": "1.5",
            "WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8, 10.0.0.0/8",
        }
    )
    assert settings.policy.enabled and (settings.max_attempts, settings.retry_seconds) == (3, 1.5)
    assert settings.allowed_networks == (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("10.0.0.0/8"))
    assert WebhookSettings.from_env({}) == WebhookSettings()
    with pytest.raises(ConfigurationError) as raised:
        WebhookSettings.from_env(
            {"WEBHOOK_ALLOWED_HOSTS": "hooks.example.com", "WEBHOOK_ALLOWED_NETWORKS": "10.0.0.0/33"}
        )
    problems = raised.value.details["problems"]
    assert problems[0].startswith("WEBHOOK_ALLOWED_NETWORKS='10.0.0.0/33': ")
    assert problems[1] == (
        "WEBHOOK_ALLOWED_HOSTS is set but WEBHOOK_SECRET_PARAMETER, WEBHOOK_QUEUE_URL, WEBHOOK_QUEUE_ARN is not."
    )
    assert raised.value.details["missing"] == ["WEBHOOK_SECRET_PARAMETER", "WEBHOOK_QUEUE_URL", "WEBHOOK_QUEUE_ARN"]


@pytest.mark.parametrize(("cls", "table"), SETTINGS, ids=IDS)
def test_every_field_is_set_by_one_variable_or_declared_not_from_the_environment(cls: type[Any], table: Table) -> None:
    fields = {field.name for field in dataclasses.fields(cls)}
    set_by = [variable.field for variable in table.variables]
    assert len(set_by) == len(set(set_by)), "a field set by two variables"
    assert not set(set_by) & table.not_from_environment
    assert set(set_by) | table.not_from_environment == fields, (
        f"fields without a variable: {sorted(fields - set(set_by) - table.not_from_environment)}; "
        f"variables without a field: {sorted(set(set_by) - fields)}"
    )


class Recording(Mapping[str, str]):
    """An empty environment that remembers every name asked for."""

    def __init__(self) -> None:
        self.asked: set[str] = set()

    def __getitem__(self, name: str) -> str:
        self.asked.add(name)
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


@pytest.mark.parametrize(("cls", "table"), SETTINGS, ids=IDS)
def test_from_env_reads_exactly_the_variables_of_its_table(cls: type[Any], table: Table) -> None:
    env = Recording()
    cls.from_env(env)
    assert env.asked == {variable.name for variable in table.variables}


def test_a_variable_belongs_to_one_table() -> None:
    names = [variable.name for _, table in SETTINGS for variable in table.variables]
    assert len(names) == len(set(names))


SHOWN = [
    pytest.param(cls, variable, id=variable.name)
    for cls, table in SETTINGS
    for variable in table.variables
    if variable.default.startswith("`")
]


@pytest.mark.parametrize(("cls", "variable"), SHOWN)
def test_the_default_the_docs_show_is_the_real_one(cls: type[Any], variable: Variable) -> None:
    field = next(field for field in dataclasses.fields(cls) if field.name == variable.field)
    default = field.default_factory() if field.default is dataclasses.MISSING else field.default  # type: ignore[misc]
    shown = re.match(r"`([^`]*)`", variable.default)
    assert shown is not None
    values, problems = read(Table("t", "nowhere", (variable,)), {variable.name: shown[1]})
    assert problems == [] and values[variable.field] == default


# The page.


def test_the_page_shows_the_tables() -> None:
    page = settings_docs.PAGE.read_text(encoding="utf-8")
    expected = settings_docs.expected_page()
    if page != expected:
        diff = "".join(
            list(difflib.unified_diff(page.splitlines(True), expected.splitlines(True), "page", "tables"))[:40]
        )
        pytest.fail(
            f"docs/configuration.md differs from the settings tables: run `{settings_docs.COMMAND}` "
            f"(python -m infra.settings_docs).\n{diff}"
        )


def test_render_and_rewrite() -> None:
    table = Table("one", "nowhere", (Variable("A", "a", Kind.TEXT, "`x`", "What A does."),))
    rendered = render(table)
    assert rendered == "| Variable | Default | Meaning |\n|---|---|---|\n| `A` | `x` | What A does. |\n"
    page = "# Page\n\n<!-- generated: one -->\nstale\n<!-- end generated -->\n\nProse stays.\n"
    fresh = f"# Page\n\n<!-- generated: one -->\n{rendered}<!-- end generated -->\n\nProse stays.\n"
    assert rewrite(page, [table]) == fresh
    assert rewrite(rewrite(page, [table]), [table]) == rewrite(page, [table])
    with pytest.raises(ValueError, match="names no settings table"):
        rewrite(page.replace("generated: one", "generated: two"), [table])
    with pytest.raises(ValueError, match="no '<!-- generated"):
        rewrite("# Page\n", [table])


def test_the_inference_servers_settings_are_read_through_the_table() -> None:
    assert ServerSettings.from_env({}) == ServerSettings(port=8080, max_concurrent=1, log_level="info")
    read_back = ServerSettings.from_env({"SAGEMAKER_BIND_TO_PORT": "9090", "MAX_CONCURRENT_INVOCATIONS": "2"})
    assert (read_back.port, read_back.max_concurrent) == (9090, 2)
    assert ServerSettings.from_env({"LOG_LEVEL": "DEBUG"}).log_level == "debug"
    with pytest.raises(ConfigurationError) as raised:
        ServerSettings.from_env({"SAGEMAKER_BIND_TO_PORT": "http", "MAX_CONCURRENT_INVOCATIONS": "0", "LOG_LEVEL": "x"})
    problems = raised.value.details["problems"]
    assert len(problems) == 3 and raised.value.code == "CONFIGURATION_ERROR"
    assert all(name in raised.value.message for name in ("SAGEMAKER_BIND_TO_PORT", "MAX_CONCURRENT_INVOCATIONS"))
