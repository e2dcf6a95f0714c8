"""Settings: every error names its source (flag, variable, file and key) with what was expected and what was given."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from viewer_bridge import RerunWebSocketServer
from viewer_bridge.cli import build_parser, main
from viewer_bridge.config import SETTINGS, BridgeConfig, ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]


def toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bridge.toml"
    path.write_text(text)
    return path


def refused(**kwargs: object) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(**kwargs)  # type: ignore[arg-type]
    return str(caught.value)


# -- the errors the issue lists, word for word --------------------------------------------


def test_an_environment_variable_of_the_wrong_type_is_named() -> None:
    assert refused(environ={"VIEWER_BRIDGE_MAX_LINEAR_X": "fast"}) == (
        "environment variable VIEWER_BRIDGE_MAX_LINEAR_X: expected a finite number >= 0, or empty for none, "
        "got 'fast'"
    )


def test_a_toml_string_is_not_a_list(tmp_path: Path) -> None:
    path = toml(tmp_path, 'transports = "lcm"\n')
    assert refused(file=path, environ={}) == (
        f"config file '{path}', key transports: expected a list of lcm, zenoh, got the string \"lcm\" "
        '(write transports = ["lcm"])'
    )


def test_a_toml_string_is_not_a_port(tmp_path: Path) -> None:
    path = toml(tmp_path, 'port = "3135"\n')
    assert refused(file=path, environ={}) == (
        f"config file '{path}', key port: expected an integer from 0 to 65535, got the string \"3135\" "
        "(write port = 3135, without quotes)"
    )


def test_a_flag_of_the_wrong_type_is_named_with_serves_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["serve", "--max-linear-x", "fast"])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: viewer-bridge serve ")
    assert err.endswith(
        "viewer-bridge serve: error: argument --max-linear-x: expected a finite number >= 0, or empty for none, "
        "got 'fast'\n"
    )


# -- more of the same, from every source -----------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("web = \"false\"\n", "key web: expected true or false, got the string \"false\" (write web = false, without "
         "quotes)"),
        ("port = 3135.0\n", "key port: expected an integer from 0 to 65535, got the number 3135.0"),
        ("port = 70000\n", "key port: expected an integer from 0 to 65535, got the integer 70000"),
        ("deadman_timeout = 0\n", "key deadman_timeout: expected a finite number > 0, got the integer 0"),
        ("deadman_timeout = inf\n", "key deadman_timeout: expected a finite number > 0, got the number inf"),
        ("path = \"ws\"\n", "key path: expected a string starting with '/', got the string \"ws\""),
        ("transports = [\"udp\"]\n", "key transports: expected a list of lcm, zenoh, got the array [\"udp\"]"),
        ("zenoh_mode = \"router\"\n", "key zenoh_mode: expected one of peer, client, got the string \"router\""),
        ("[remap]\ntele_cmd_vel = 1\n", "key remap: expected a table of stream = \"topic\", got the table "
         "{ tele_cmd_vel = 1 }"),
        ("[bridge]\nport = \"x\"\n", "key bridge.port: expected an integer from 0 to 65535, got the string \"x\""),
    ],
)
def test_toml_values_are_checked_strictly(tmp_path: Path, text: str, message: str) -> None:
    path = toml(tmp_path, text)
    assert refused(file=path, environ={}) == f"config file '{path}', {message}"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("PORT", "30x", "expected an integer from 0 to 65535, got '30x'"),
        ("WEB", "maybe", "expected true or false, got 'maybe'"),
        ("TRANSPORTS", "lcm,udp", "expected a comma-separated list, each one of lcm, zenoh, got 'lcm,udp'"),
        ("REMAP", "tele_cmd_vel", "expected STREAM=TOPIC, got 'tele_cmd_vel'"),
        ("RATE_LIMIT", "nan", "expected a finite number > 0, got 'nan'"),
        ("ECHO", "yaml", "expected one of text, json, or empty for none, got 'yaml'"),
    ],
)
def test_environment_values_name_their_variable(name: str, value: str, message: str) -> None:
    variable = f"VIEWER_BRIDGE_{name}"
    assert refused(environ={variable: value}) == f"environment variable {variable}: {message}"


def test_environment_text_is_parsed() -> None:
    config = load_config(
        environ={
            "VIEWER_BRIDGE_PORT": "3135",
            "VIEWER_BRIDGE_WEB": "false",
            "VIEWER_BRIDGE_TRANSPORTS": "lcm, zenoh",
            "VIEWER_BRIDGE_REMAP": "tele_cmd_vel=cmd_vel",
            "VIEWER_BRIDGE_MAX_LINEAR_X": "0.5",
            "VIEWER_BRIDGE_MAX_ANGULAR_Z": "",
            "VIEWER_BRIDGE_LOG_LEVEL": "debug",
        }
    )
    assert (config.port, config.web, config.transports, config.remap) == (
        3135, False, ["lcm", "zenoh"], {"tele_cmd_vel": "cmd_vel"}
    )
    assert (config.max_linear_x, config.max_angular_z, config.log_level) == (0.5, None, "DEBUG")


def test_unknown_names_are_errors_with_a_suggestion(tmp_path: Path) -> None:
    assert refused(environ={"VIEWER_BRIDGE_PROT": "1"}) == (
        "unknown environment variable VIEWER_BRIDGE_PROT (did you mean VIEWER_BRIDGE_PORT?)"
    )
    path = toml(tmp_path, "deadman_timout = 2.0\n")
    assert refused(file=path, environ={}) == (
        f"config file '{path}': unknown setting 'deadman_timout' (did you mean deadman_timeout?)"
    )
    path = toml(tmp_path, "[bridge]\nprot = 1\n")
    assert refused(file=path, environ={}) == f"config file '{path}': unknown setting 'bridge.prot' (did you mean port?)"
    assert refused(overrides={"prot": 1}, environ={}) == "unknown setting 'prot' in arguments (did you mean port?)"


def test_keyword_arguments_are_checked_strictly() -> None:
    with pytest.raises(ConfigError) as caught:
        RerunWebSocketServer(port="3030")
    assert str(caught.value) == "port: expected an integer from 0 to 65535, got '3030'"
    with pytest.raises(ConfigError) as caught:
        BridgeConfig(max_linear_x=-1.0)
    assert str(caught.value) == "max_linear_x: expected a finite number >= 0, or None, got -1.0"


def test_settings_that_belong_together_are_named_together() -> None:
    assert refused(overrides={"tls_cert": "cert.pem"}, environ={}) == "tls_cert and tls_key must be given together"
    assert refused(overrides={"ping_timeout": 60.0}, environ={}) == (
        "ping_timeout (60 s) must not exceed ping_interval (30 s)"
    )


# -- where settings may sit in a TOML file ------------------------------------------------


def test_a_bridge_table_works_beside_other_tables(tmp_path: Path) -> None:
    path = toml(
        tmp_path,
        'namespace = "robot1"\n'
        "[bridge]\n"
        "port = 0\n"
        'frame_id = "map"\n'
        "[remap]\n"
        'tele_cmd_vel = "cmd_vel"\n'
        "[some_other_program]\n"
        "anything = 1\n",
    )
    config = load_config(path, environ={})
    assert (config.namespace, config.port, config.frame_id, config.remap) == (
        "robot1", 0, "map", {"tele_cmd_vel": "cmd_vel"}
    )


def test_a_setting_may_be_given_once_per_file(tmp_path: Path) -> None:
    path = toml(tmp_path, "port = 1\n[bridge]\nport = 2\n")
    assert refused(file=path, environ={}) == f"config file '{path}': port is set twice, as 'port' and 'bridge.port'"


def test_without_a_bridge_table_every_top_level_name_is_a_setting(tmp_path: Path) -> None:
    path = toml(tmp_path, "port = 1\n[some_other_program]\nanything = 1\n")
    assert refused(file=path, environ={}) == f"config file '{path}': unknown setting 'some_other_program'"


def test_layers_override_lowest_first(tmp_path: Path) -> None:
    path = toml(tmp_path, 'frame_id = "file"\npath = "/file"\nport = 1\n')
    config = load_config(path, environ={"VIEWER_BRIDGE_FRAME_ID": "env", "VIEWER_BRIDGE_PATH": "/env"},
                         flags={"frame_id": "flag"})
    assert (config.port, config.path, config.frame_id) == (1, "/env", "flag")


# -- one source of help ---------------------------------------------------------------------


def test_every_setting_has_help_a_flag_and_shows_its_default() -> None:
    serve = build_parser()._subparsers._group_actions[0].choices["serve"]  # type: ignore[union-attr]
    text = " ".join(serve.format_help().split())
    for name, setting in SETTINGS.items():
        assert setting.description, name
        if setting.extra.get("file_only"):
            # Secrets (the tokens table) never go in argv: no flag at all.
            assert f"{setting.flag} " not in text and f"{setting.flag}=" not in text, name
            continue
        assert setting.flag in text, name
        assert " ".join(setting.help().split()) in text, name


def _table(path: Path) -> str:
    text = path.read_text(encoding="utf-8")
    match = re.search(r"<!-- settings-table(?: ([\w ]+))? -->\n(.*?)<!-- /settings-table -->", text, re.S)
    assert match, f"{path} has no settings table"
    return match.group(0)


@pytest.mark.parametrize("doc", ["README.md", "docs/configuration.md"])
def test_settings_tables_in_the_docs_are_generated_from_the_settings(doc: str) -> None:
    from viewer_bridge.config import settings_markdown

    block = _table(ROOT / doc)
    header = block.splitlines()[0]
    names = header.removeprefix("<!-- settings-table").removesuffix("-->").split() or None
    expected = f"{header}\n{settings_markdown(names)}<!-- /settings-table -->"
    assert block == expected, f"{doc} is out of date: run `make docs`"
