"""The fleet's settings: the robots table from a file, a flag or a variable, and what is refused, by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from viewer_bridge.cli import main
from viewer_bridge.config import ConfigError, RobotSettings, from_mapping, load_config


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "station.toml"
    path.write_text(text)
    return path


def test_a_robots_table_as_the_issue_writes_it(tmp_path: Path) -> None:
    config = load_config(_toml(tmp_path, """
[robots.go2-1]
namespace = "go2_1"
entity_prefix = "/world/robots/go2-1"
max_linear_x = 0.8

[robots.go2-2]
namespace = "go2_2"
"""), environ={})
    assert config.robots == {
        "go2-1": RobotSettings(namespace="go2_1", entity_prefix="/world/robots/go2-1", max_linear_x=0.8),
        "go2-2": RobotSettings(namespace="go2_2"),
    }
    assert config.station is None and config.fleet_refresh_hz == 10.0
    # replace() keeps the tables.
    assert config.replace(port=0).robots == config.robots


def test_names_alone_from_a_flag_or_a_variable() -> None:
    assert list(load_config(environ={"VIEWER_BRIDGE_ROBOTS": "go2-1, go2-2"}).robots) == ["go2-1", "go2-2"]
    assert load_config(environ={}, flags={"robots": {"go2-3": RobotSettings()}}).robots == {"go2-3": RobotSettings()}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[robots.go2-1]\nspeed = 1\n', "key robots: [robots.go2-1] unknown key `speed`"),
        ('[robots.go2-1]\nmax_linear_x = "fast"\n',
         "[robots.go2-1] Expected `float | null`, got `str` (key max_linear_x)"),
        ('[robots.go2-1]\nmax_linear_x = -1.0\n', "robots.go2-1.max_linear_x must be a finite number >= 0, got -1.0"),
        ('[robots."a/b"]\n', "robots.a/b: invalid robot name 'a/b'"),
        ('[robots.go2-1]\nnamespace = "a b"\n', "robots.go2-1: invalid namespace 'a b'"),
        ('[robots.go2-1]\nentity_prefix = "world"\n', "robots.go2-1.entity_prefix must be an entity path"),
        ('[robots.a]\nentity_prefix = "/w/a"\n[robots.b]\nentity_prefix = "/w/a/b"\n',
         "robots.b.entity_prefix '/w/a/b' overlaps robots.a's '/w/a'"),
        ('robots = 3\n', "expected a table of [robots.NAME] tables"),
        ('station = "a b"\n', "invalid station name 'a b'"),
        ('fleet_refresh_hz = 0\n', "fleet_refresh_hz: expected a finite number > 0"),
    ],
)
def test_bad_fleet_settings_are_named(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_config(_toml(tmp_path, text), environ={})
    assert message in str(refused.value)


def test_python_arguments_take_plain_dicts() -> None:
    config = from_mapping({"robots": {"go2-1": {"agent": False, "scale_angular_z": 0.5}}})
    assert config.robots["go2-1"] == RobotSettings(agent=False, scale_angular_z=0.5)
    with pytest.raises(ConfigError, match=r"\[robots.go2-1\] unknown key `speed`"):
        from_mapping({"robots": {"go2-1": {"speed": 1}}})


def test_serve_refuses_a_bad_robot_name_before_starting(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--port", "0", "--robots", "a/b"]) == 2
    assert "invalid robot name 'a/b'" in capsys.readouterr().err
