"""Webhooks when scaled out: the job runs on a worker process, and of the two workers sending from the shared
outbox exactly one delivers each event, signed with the key's secret kept in PostgreSQL."""

from __future__ import annotations

import json
import time

from reangle.store.postgres import PostgresStore
from tests.api.conftest import KEY_A, edit_input, submit, succeeded, upload
from tests.scale.conftest import Deployment
from tests.webhook_receiver import Receiver


def test_a_job_run_on_a_worker_is_delivered_once(deployment: Deployment) -> None:
    receiver = Receiver(statuses=[500])  # the retry, too, goes out once
    try:
        with deployment.apis[0].client(KEY_A) as client:
            jobs = [
                submit(client, edit_input(upload(client)["id"], seed=seed), webhook_url=receiver.url)
                for seed in (1, 2, 3)
            ]
            done = {job["id"]: succeeded(client, job["id"]) for job in jobs}
            secret = client.get("/v1/webhook-secret").json()["secret"]
        receiver.wait_for(4, timeout=30)
        time.sleep(1.5)  # several sender polls of both workers: nothing more comes
        requests = receiver.requests
        assert len(requests) == 4
        assert len({request.headers["webhook-id"] for request in requests}) == 3
        events = [request.verified(secret) for request in requests]
        assert {event["data"]["id"] for event in events} == set(done)  # type: ignore[index]
        assert all(event["type"] == "job.succeeded" for event in events)  # type: ignore[index]
        store = PostgresStore(deployment.database_url)
        try:
            for job_id in done:
                [delivery] = store.webhook_deliveries(job_id)
                assert delivery.delivered_at is not None
        finally:
            store.close()
        assert json.loads(requests[0].body)["data"]["status"] == "succeeded"
    finally:
        receiver.close()
