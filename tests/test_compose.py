"""The composition root: which adapters settings choose, and what it says about them."""

from __future__ import annotations

import pytest

from reangle.compose import SettingsError, describe_storage, open_job_store, storage_summary
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
