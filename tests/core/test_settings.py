"""Settings load, save, and refuse what they cannot read without losing it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mixtral_desk.core.errors import SettingsError
from mixtral_desk.core.paths import DataPaths
from mixtral_desk.core.settings import (
    MIGRATIONS,
    SCHEMA_VERSION,
    Settings,
    load_settings,
    migrate,
    save_settings,
)


def test_missing_file_gives_defaults(data_home: DataPaths) -> None:
    assert not data_home.settings_file.exists()
    assert load_settings() == Settings()


def test_round_trip(data_home: DataPaths) -> None:
    settings = Settings()
    settings.load.n_ctx = 8192
    settings.sampling = settings.sampling.model_copy(update={"temperature": 0.2})
    save_settings(settings)
    assert data_home.settings_file.is_file()
    assert load_settings() == settings
    assert not list(data_home.config_dir.glob(".settings-*")), "temporary file left behind"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{not json", "not valid JSON (line 1"),
        ("[1, 2]", "does not hold a JSON object"),
        ('{"load": {"n_ctx": 10}}', "invalid value for load.n_ctx"),
        ('{"colour": "blue"}', "invalid value for colour"),
        (json.dumps({"schema_version": SCHEMA_VERSION + 1}), "written by a newer Mixtral Desk"),
    ],
)
def test_bad_files_are_refused_by_name_and_left_untouched(
    data_home: DataPaths, content: str, expected: str
) -> None:
    path: Path = data_home.settings_file
    path.write_text(content)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert expected in str(caught.value)
    assert str(path) in str(caught.value)
    assert path.read_text() == content


def test_offload_settings_round_trip_and_default_for_old_files(data_home: DataPaths) -> None:
    assert Settings().load.gpu_layers_auto is True and Settings().load.n_cpu_moe == 0
    assert Settings().load.n_gpu_layers == 0  # what "Automatic" off falls back to
    # A file written before these settings existed (version 1) keeps its GPU layers.
    data_home.settings_file.write_text(json.dumps(
        {"schema_version": 1, "load": {"n_gpu_layers": 5}}))
    old = load_settings()
    assert old.load.n_gpu_layers == 5
    assert old.load.gpu_layers_auto is False and old.load.n_cpu_moe == 0
    settings = Settings()
    settings.load.gpu_layers_auto = False
    settings.load.n_cpu_moe = 12
    save_settings(settings)
    assert load_settings().load.gpu_layers_auto is False
    assert load_settings().load.n_cpu_moe == 12
    assert json.loads(data_home.settings_file.read_text())["schema_version"] == SCHEMA_VERSION


def version_1_file(**load: object) -> dict[str, object]:
    """A whole settings file as version 1 wrote it (every value), with ``load`` changed."""
    written = Settings().model_dump(mode="json")
    written["schema_version"] = 1
    written["load"].update({"gpu_layers_auto": False, **load})
    return written


@pytest.mark.parametrize(("load", "automatic"), [
    ({}, True),  # version 1's defaults, never changed: Automatic now
    ({"n_ctx": 4096, "n_threads": 2}, True),  # other load values do not say anything of the GPU
    ({"gpu_layers_auto": True}, True),
    ({"n_gpu_layers": 20}, False),  # a choice: kept
    ({"n_gpu_layers": -1}, False),
    ({"n_cpu_moe": 4}, False),
])
def test_a_version_1_file_moves_to_automatic_gpu_layers_unless_the_user_chose(
        data_home: DataPaths, load: dict[str, object], automatic: bool) -> None:
    data_home.settings_file.write_text(json.dumps(version_1_file(**load)))
    settings = load_settings()
    assert settings.load.gpu_layers_auto is automatic
    assert settings.schema_version == SCHEMA_VERSION == 2
    for key, value in load.items():
        assert getattr(settings.load, key) == value  # nothing else moves
    assert json.loads(data_home.settings_file.read_text())["schema_version"] == 1  # read only
    save_settings(settings)
    assert json.loads(data_home.settings_file.read_text())["schema_version"] == SCHEMA_VERSION
    assert load_settings() == settings


def test_an_explicit_choice_to_plan_no_gpu_layers_is_kept_from_version_2_on(
        data_home: DataPaths) -> None:
    settings = Settings()
    settings.load.gpu_layers_auto = False  # 0 GPU layers, Automatic off: chosen, not a default
    save_settings(settings)
    assert load_settings().load.gpu_layers_auto is False


def test_a_file_without_a_version_is_read_as_version_1(data_home: DataPaths) -> None:
    data_home.settings_file.write_text(json.dumps({"load": {"n_ctx": 2048}}))
    settings = load_settings()
    assert settings.load.gpu_layers_auto is True and settings.load.n_ctx == 2048
    data_home.settings_file.write_text(json.dumps({"load": {"n_gpu_layers": 3}}))
    assert load_settings().load.gpu_layers_auto is False


def test_there_is_one_migration_per_older_version() -> None:
    assert len(MIGRATIONS) == SCHEMA_VERSION - 1
    assert migrate({"schema_version": "two"}) == {"schema_version": "two"}  # for validation
    assert migrate({"schema_version": 1, "load": "oops"})["load"] == "oops"


def test_negative_cpu_moe_is_refused(data_home: DataPaths) -> None:
    data_home.settings_file.write_text('{"load": {"n_cpu_moe": -1}}')
    with pytest.raises(SettingsError, match=r"load\.n_cpu_moe"):
        load_settings()


def test_server_settings_round_trip_and_default_for_old_files(data_home: DataPaths) -> None:
    assert Settings().server.api_port == 8080
    # A file written before the server section existed (same schema version) still reads.
    data_home.settings_file.write_text(json.dumps({"schema_version": SCHEMA_VERSION}))
    assert load_settings().server.api_port == 8080
    settings = Settings()
    settings.server.api_port = 8123
    save_settings(settings)
    assert load_settings().server.api_port == 8123
    assert json.loads(data_home.settings_file.read_text())["schema_version"] == SCHEMA_VERSION


@pytest.mark.parametrize("port", [-1, 65536])
def test_out_of_range_api_port_is_refused(data_home: DataPaths, port: int) -> None:
    data_home.settings_file.write_text(json.dumps({"server": {"api_port": port}}))
    with pytest.raises(SettingsError, match=r"server\.api_port"):
        load_settings()
