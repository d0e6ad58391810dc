"""The composition root: which adapters settings choose, and what it says about them."""

from __future__ import annotations

from typing import Literal

import pytest
from pydantic import SecretStr

from reangle.compose import (
    SettingsError,
    check_role,
    dashscope_clients,
    describe_storage,
    open_job_store,
    storage_summary,
)
from reangle.settings import Settings


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://app:hunter2@db.internal:5432/reangle",
        "postgresql://app@db.internal:5432/reangle?password=hunter2",
        "postgresql://app@db.internal:5432/reangle?sslpassword=hunter2&sslmode=require",
    ],
)
def test_where_state_lives_is_said_without_user_or_password(url: str) -> None:
    settings = Settings(database_url=url, storage_url="s3://bucket/assets")
    assert storage_summary(settings) == {
        "jobs": "postgresql://db.internal:5432/reangle",
        "assets": "s3://bucket/assets",
    }
    assert "hunter2" not in describe_storage(settings)
    assert "app" not in storage_summary(settings)["jobs"]


def test_an_unknown_database_scheme_is_a_settings_error_without_the_password() -> None:
    with pytest.raises(
        SettingsError, match=r"REANGLE_DATABASE_URL='mysql://db/x': use postgresql://"
    ) as caught:
        open_job_store(Settings(database_url="mysql://root:hunter2@db/x"))
    assert "hunter2" not in caught.value.message


def test_the_dashscope_clients_take_the_key_and_the_polling_settings_and_never_show_the_key() -> None:
    settings = Settings(
        dashscope_api_key=SecretStr(" sk-hunter2 "),
        dashscope_poll_interval_s=0.5,
        dashscope_task_timeout_s=120,
    )
    assert "hunter2" not in repr(settings)
    assert "hunter2" not in str(settings.model_dump())
    make = dashscope_clients(settings)
    assert make is not None
    config = make("wan2.7-image").config
    assert config.api_key == "sk-hunter2"
    assert (config.poll_interval_s, config.max_poll_interval_s, config.task_timeout_s) == (0.5, 10.0, 120)
    assert "hunter2" not in repr(config)


@pytest.mark.parametrize("key", [None, "", "  "])
def test_without_a_dashscope_key_there_is_no_client(key: str | None) -> None:
    assert dashscope_clients(Settings(dashscope_api_key=None if key is None else SecretStr(key))) is None


@pytest.mark.parametrize("role", ["api", "worker"])
def test_roles_but_all_need_a_shared_database_and_say_how_to_set_one(role: Literal["api", "worker"]) -> None:
    with pytest.raises(SettingsError, match=f"role '{role}' needs a database shared") as caught:
        check_role(Settings(role=role))
    assert caught.value.hint is not None
    assert "REANGLE_DATABASE_URL=postgresql://" in caught.value.hint
    check_role(Settings(role=role, database_url="postgresql://db.internal/reangle"))  # no connection made
    check_role(Settings(role="all"))


@pytest.mark.parametrize("role", ["all", "api", "worker"])
def test_a_database_url_of_another_kind_is_named_as_the_problem(
    role: Literal["all", "api", "worker"],
) -> None:
    with pytest.raises(SettingsError, match=r"REANGLE_DATABASE_URL='mysql://db/x': use postgresql://"):
        check_role(Settings(role=role, database_url="mysql://db/x"))
