"""PostgreSQL stopped and started again under load, with two API replicas and two workers on it: while it is
down the replicas answer 503 at once (never a 500, never a hang); a job in hand renders on through an outage
longer than the workers' grace; afterwards every process carries on by itself and every job accepted ends
succeeded exactly once."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.api.conftest import KEY_A, edit_input, get_job, poll, running, submit, succeeded, upload, wait_job
from tests.pg_cluster import PgCluster
from tests.scale.conftest import DeployFactory
from tests.scale.test_scale_out import holder_of, statuses

ANSWER_WITHIN_S = 5.0
#: How long the database stays down after the job queue gave up on the job in hand (its grace ended)
AFTER_GRACE_S = 1.0
GOES_ON = "the job goes on"


@pytest.fixture(scope="module")
def own_cluster() -> Iterator[PgCluster]:
    """A cluster of this module's own: stopping it leaves the session's cluster alone."""
    own = PgCluster()
    try:
        own.start()
        yield own
    finally:
        own.destroy()


@pytest.fixture
def cluster(own_cluster: PgCluster) -> PgCluster:
    """The module's cluster, running (a test that failed in its outage left it stopped); each test has a
    database of its own on it."""
    if not (own_cluster.data_dir / "postmaster.pid").exists():
        own_cluster.start()
    return own_cluster


@pytest.fixture
def pg_url(cluster: PgCluster) -> str:  # the deployment's database, on the cluster above
    return cluster.create_database()


@dataclass
class StatusReader:
    """Reads a job's status through every replica in turn, all the time, noting each answer's code and
    how long it took."""

    urls: list[str]
    job_id: str
    answers: list[tuple[int, float]] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.done.is_set():
            for url in self.urls:
                started = time.monotonic()
                response = httpx.get(
                    f"{url}/v1/jobs/{self.job_id}",
                    headers={"Authorization": f"Bearer {KEY_A}"},
                    timeout=ANSWER_WITHIN_S * 3,
                )
                self.answers.append((response.status_code, time.monotonic() - started))
            time.sleep(0.05)


def test_the_database_restarted_under_load_loses_and_repeats_nothing_and_a_job_in_hand_renders_on(
    deploy: DeployFactory, cluster: PgCluster
) -> None:
    """A render is GPU minutes: an outage stops a worker's job queue, not the job it has in hand, even past
    the grace after which the job queue cancels the job's task. The other worker runs short jobs meanwhile."""
    deployment = deploy(apis=2, workers=2, fake_step_seconds=0.12)
    first, second = (api.client(KEY_A) for api in deployment.apis)
    image = upload(first)["id"]
    since = [worker.log_size() for worker in deployment.workers]
    long = submit(first, edit_input(image, num_inference_steps=100))  # 12 s of steps
    poll(lambda: get_job(first, long["id"])["progress"] > 0 or None, what="the long job under way")
    holder = holder_of(long, deployment.workers, since)
    jobs = [
        submit((first, second)[n % 2], edit_input(image, seed=n, num_inference_steps=2)) for n in range(16)
    ]
    reader = StatusReader([api.url for api in deployment.apis], jobs[-1]["id"])
    reading = threading.Thread(target=reader.run)
    reading.start()
    try:
        poll(lambda: get_job(first, jobs[2]["id"])["status"] == "succeeded" or None, what="work under way")
        mark = holder.log_size()
        cluster.stop()
        # until the job queue's grace for the job in hand has ended (it stops the job's task then), and on
        poll(lambda: GOES_ON in holder.log(mark) or None, what="the end of the grace")
        time.sleep(AFTER_GRACE_S)
        cluster.start()
        finished = [succeeded(first, job["id"], timeout=90) for job in jobs]
        done = succeeded(first, long["id"], timeout=90)
    finally:
        reader.done.set()
        reading.join()

    codes = {code for code, _ in reader.answers}
    assert codes <= {200, 503}, codes
    assert 503 in codes, "no read fell in the outage"
    assert max(seconds for _, seconds in reader.answers) < ANSWER_WITHIN_S
    for job in finished:
        assert statuses(job).count("succeeded") == 1
        assert len(job["output"]["assets"]) == 1
    assert statuses(done) == ["queued", "processing", "succeeded"]  # neither handed back nor run again
    assert done["attempt"] == 1
    holder_log = holder.log_path.read_text()
    assert GOES_ON in holder_log
    # the job queue's own lines about the outage are warnings, without tracebacks
    assert "Side task listener failed" in holder_log

    # every process reconnected by itself: both replicas take new jobs, both workers run them (with one
    # worker busy, only the other can take the next job) and beat again
    marks = [worker.log_size() for worker in deployment.workers]
    busy = submit(first, edit_input(image, seed=98, num_inference_steps=20))  # 2.4 s
    wait_job(first, busy["id"], running)
    busy_worker = holder_of(busy, deployment.workers, marks)
    following = submit(second, edit_input(image, seed=99))
    succeeded(second, following["id"])
    (other,) = (worker for worker in deployment.workers if worker is not busy_worker)
    assert f"job {following['id']}: attempt 1" in other.log(marks[deployment.workers.index(other)])
    succeeded(first, busy["id"])

    def both_workers_listed() -> dict[str, Any] | None:
        health: dict[str, Any] = httpx.get(f"{deployment.apis[1].url}/healthz").json()
        return health if len(health["workers"]) == 2 else None

    health = poll(both_workers_listed, what="both workers listed again")
    assert {worker["engine"] for worker in health["workers"]} == {"fake"}
    assert all(worker.process is not None and worker.process.poll() is None for worker in deployment.workers)
    for worker in deployment.workers:  # the outage is warnings in their logs, not errors with tracebacks
        log = worker.log_path.read_text()
        assert " ERROR " not in log, log
        assert "Traceback" not in log, log
