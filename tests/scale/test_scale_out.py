"""Scale-out with real processes: two API replicas and two workers on one PostgreSQL database and one
S3-compatible bucket. Jobs go in through one replica and are watched, canceled and fetched through the
other; workers and replicas are killed with SIGKILL mid-way.

Most tests share one deployment (`deployment`, steps of 0.1 s); the tests that need other settings or other
workers start their own (`deploy`)."""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import psycopg

from reangle.core.models import INSTRUCTION_EDIT
from tests.api.conftest import (
    KEY_A,
    TERMINAL,
    cancel,
    download,
    edit_input,
    get_job,
    poll,
    running,
    slow_input,
    submit,
    succeeded,
    upload,
    wait_job,
)
from tests.api.test_events_and_cancel import events
from tests.s3_server import S3Server
from tests.scale.conftest import DeployFactory, Deployment, WorkerProcess


def statuses(job: dict[str, Any]) -> list[str]:
    return [change["status"] for change in job["history"]]


def client(server: Any) -> httpx.Client:
    return server.client(KEY_A)


def holder_of(job: dict[str, Any], workers: list[WorkerProcess], since: list[int]) -> WorkerProcess:
    """The worker that took the job's first attempt."""
    (holder,) = (
        worker
        for worker, mark in zip(workers, since, strict=True)
        if f"job {job['id']}: attempt 1" in worker.log(mark)
    )
    return holder


def assets(database_url: str) -> list[tuple[str, str]]:
    """(id, sha256) of every asset record."""
    with psycopg.connect(database_url) as conn:
        return conn.execute("SELECT id, sha256 FROM assets").fetchall()


def test_a_worker_takes_only_its_models_replicas_list_the_workers_and_the_retention_sweep_empties_the_bucket(
    deploy: DeployFactory, s3_server: S3Server
) -> None:
    deployment = deploy(
        apis=1,
        workers=1,
        worker_args=("--models", INSTRUCTION_EDIT),
        result_ttl_s=2,
        upload_ttl_s=2,
        sweep_interval_s=1,
    )
    api = client(deployment.apis[0])
    image = upload(api)["id"]
    camera = submit(api, edit_input(image))
    instruction = submit(api, {"images": [image], "prompt": "make it dusk"}, model=INSTRUCTION_EDIT)

    succeeded(api, instruction["id"])
    prefix = deployment.storage_prefix
    assert len(s3_server.keys(prefix)) == 2  # the upload and the output
    time.sleep(1)  # time enough for the camera job, had the worker taken it
    assert get_job(api, camera["id"])["status"] == "queued"
    (listed,) = poll(lambda: httpx.get(f"{deployment.apis[0].url}/healthz").json()["workers"] or None)
    assert (listed["engine"], listed["models"]) == ("fake", [INSTRUCTION_EDIT])

    deployment.workers[0].stop()  # a clean stop: the worker leaves the list at once
    assert httpx.get(f"{deployment.apis[0].url}/healthz").json()["workers"] == []
    deployment.workers[0].args = ()
    deployment.workers[0].start()
    job = succeeded(api, camera["id"])  # its input kept past the upload's lifetime
    health = httpx.get(f"{deployment.apis[0].url}/healthz").json()
    assert health["role"] == "api"
    assert health["storage"]["assets"].startswith("s3://")
    assert health["storage"]["jobs"].startswith("postgresql://")

    # the retention sweep (on the worker) deletes both jobs, then every object: the upload was kept as long
    # as the queued job needed it
    poll(lambda: api.get(f"/v1/jobs/{instruction['id']}").status_code == 404 or None, what="the sweep")
    poll(lambda: api.get(f"/v1/jobs/{job['id']}").status_code == 404 or None, timeout=30, what="the sweep")
    poll(lambda: not s3_server.keys(prefix) or None, timeout=30, what="the bucket emptied")


def test_a_job_sent_to_one_replica_runs_on_a_worker_and_is_followed_and_fetched_through_the_other(
    deployment: Deployment,
) -> None:
    first, second = (client(api) for api in deployment.apis)
    job = submit(first, edit_input(upload(first)["id"]))

    with second.stream("GET", f"/v1/jobs/{job['id']}/events") as response:
        assert response.status_code == 200
        received = list(events(response))

    assert received[-1].kind == "status"
    assert received[-1].data["status"] == "succeeded"
    progress = [event.data for event in received if event.kind == "progress"]
    assert progress, [event.kind for event in received]
    assert progress[-1]["progress"] == 1.0
    done = get_job(second, job["id"])
    assert statuses(done) == ["queued", "processing", "succeeded"]
    asset = done["output"]["assets"][0]
    fetched = download(asset["url"])
    assert fetched.status_code == 200
    assert fetched.headers["content-type"] == "image/png"
    assert fetched.content.startswith(b"\x89PNG")


def test_jobs_spread_over_the_workers_and_a_higher_priority_goes_first(deployment: Deployment) -> None:
    # the shared deployment's steps of 0.1 s: the first job runs 6 s, longer than Procrastinate's 5 s fetch
    # poll, so the other worker takes the second even if it started listening just after the job's notice (at
    # the servers' default 0.02 s the first job ran 0.6 s, and one worker could finish it and take the second
    # itself)
    since = [worker.log_size() for worker in deployment.workers]
    api = client(deployment.apis[0])
    image = upload(api)["id"]
    # both workers busy, one freed a second before the other: the first free one must take the higher
    # priority (two workers freed in the same millisecond would make the order a race)
    slow = [submit(api, slow_input(image, steps=steps)) for steps in (60, 70)]
    poll(
        lambda: all(get_job(api, job["id"])["status"] == "processing" for job in slow) or None,
        what="2 running",
    )
    low = submit(api, edit_input(image))
    high = submit(api, edit_input(image), priority=10)

    for job in [*slow, low, high]:
        succeeded(api, job["id"])
    started = {job["id"]: get_job(api, job["id"])["started_at"] for job in (low, high)}
    assert started[high["id"]] < started[low["id"]]
    logs = [worker.log(mark) for worker, mark in zip(deployment.workers, since, strict=True)]
    assert all("Traceback" not in log for log in logs), logs


def test_cancel_through_another_replica_stops_the_job_on_its_worker(deployment: Deployment) -> None:
    since = [worker.log_size() for worker in deployment.workers]
    first, second = (client(api) for api in deployment.apis)
    image = upload(first)["id"]
    job = submit(first, slow_input(image, steps=100))  # 10 s if left alone
    wait_job(first, job["id"], running)
    holder = holder_of(job, deployment.workers, since)
    # the other worker busy too: only the canceled job's worker can take the next job
    other = submit(first, slow_input(image, steps=100))
    wait_job(first, other["id"], running)

    asked = time.monotonic()
    response = second.post(f"/v1/jobs/{job['id']}/cancel")
    assert response.status_code == 200, response.text
    ended = wait_job(first, job["id"], timeout=10)
    stopped_after = time.monotonic() - asked

    assert ended["status"] == "canceled"
    assert ended["output"]["assets"] == []
    assert stopped_after < 3, stopped_after
    # the worker is free again at once: it runs the next job
    mark = holder.log_size()
    following = submit(second, edit_input(upload(second)["id"]))
    succeeded(second, following["id"])
    assert f"job {following['id']}: attempt 1" in holder.log(mark)
    cancel(first, other["id"])
    assert wait_job(first, other["id"])["status"] in TERMINAL


def test_a_replica_killed_after_accepting_a_job_loses_nothing_and_a_retry_elsewhere_gets_the_same_job(
    deployment: Deployment,
) -> None:
    first, second = (client(api) for api in deployment.apis)
    image = upload(first)["id"]
    key = {"Idempotency-Key": "order-42"}
    response = first.post(
        "/v1/jobs", json={"model": "qwen-edit-multiangle-2511", "input": edit_input(image)}, headers=key
    )
    assert response.status_code == 202, response.text
    deployment.apis[0].kill()

    with deployment.repairing():
        retried = second.post(
            "/v1/jobs", json={"model": "qwen-edit-multiangle-2511", "input": edit_input(image)}, headers=key
        )
        assert retried.status_code in (200, 202), retried.text
        assert retried.json()["id"] == response.json()["id"]
        succeeded(second, response.json()["id"])


JOBS = 30


def test_workers_killed_mid_job_hand_their_jobs_to_others_and_many_jobs_all_succeed_exactly_once(
    deployment: Deployment, s3_server: S3Server
) -> None:
    database = deployment.database_url
    earlier = {asset_id for asset_id, _ in assets(database)}  # of the tests before, on this deployment
    since = [worker.log_size() for worker in deployment.workers]
    api = client(deployment.apis[0])
    image = upload(api)["id"]
    slow = submit(api, slow_input(image, steps=20))  # 2 s of work
    wait_job(api, slow["id"], running)
    holder = holder_of(slow, deployment.workers, since)
    (other,) = (worker for worker in deployment.workers if worker is not holder)

    def kill_mid_job(victim: WorkerProcess, since: int) -> str:
        """SIGKILL the worker as soon as its log since `since` says it claimed a job; that job's id."""
        claim = poll(
            lambda: re.search(r"job (\S+): attempt 1 on worker", victim.log(since)),
            what=f"{victim.name} claims a job",
        )
        victim.kill()
        return claim.group(1)

    with ThreadPoolExecutor(len(deployment.workers)) as pool:
        holder.kill()
        restarts = [pool.submit(holder.start)]
        # the other worker, the only one up, takes this job (1 s of work) and is killed in it while the first
        # worker starts
        since_other = other.log_size()
        jobs = [submit(api, edit_input(image, seed=0, num_inference_steps=10))]
        killed = kill_mid_job(other, since_other)
        restarts.append(pool.submit(other.start))
        # as many as keep the workers busy through the restarts (the killed jobs, run again once their workers
        # are found silent, end the test)
        jobs += [submit(api, edit_input(image, seed=seed, num_inference_steps=4)) for seed in range(1, JOBS)]
        for restart in restarts:
            restart.result()
    done = succeeded(api, slow["id"], timeout=40)
    finished = [succeeded(api, job["id"], timeout=90) for job in jobs]

    assert done["attempt"] == 2
    assert statuses(done).count("succeeded") == 1
    assert len(done["output"]["assets"]) == 1
    assert download(done["output"]["assets"][0]["url"]).status_code == 200
    logs = "".join(worker.log_path.read_text() for worker in deployment.workers)
    runners = [
        re.findall(rf"job {slow['id']}: attempt {attempt} on worker (\S+)", logs) for attempt in (1, 2)
    ]
    assert [len(names) for names in runners] == [1, 1], runners
    assert runners[0] != runners[1], runners  # another worker ran it again
    assert len({job["id"] for job in finished}) == JOBS
    assert {job["id"]: job["attempt"] for job in finished}[killed] == 2, "the job killed was not run again"
    finished.append(done)
    for job in finished:
        assert statuses(job)[-1] == "succeeded"
        assert statuses(job).count("succeeded") == 1
        assert len(job["output"]["assets"]) == 1
    # the outputs of the killed attempts are swept: every record left is an upload or an output a job kept,
    # and the bucket holds exactly their contents
    kept = {job["output"]["assets"][0]["id"] for job in finished} | {image}

    def swept() -> set[str] | None:
        rows = assets(database)
        return {sha for _, sha in rows} if {asset_id for asset_id, _ in rows} - earlier == kept else None

    contents = poll(swept, timeout=30, what="the sweep of the unkept outputs")
    prefix = deployment.storage_prefix
    assert s3_server.keys(prefix) == {f"{prefix}/{sha[:2]}/{sha}" for sha in contents}


def test_a_worker_stopped_mid_job_hands_it_back_and_another_worker_runs_it(deployment: Deployment) -> None:
    since = [worker.log_size() for worker in deployment.workers]
    api = client(deployment.apis[0])
    job = submit(api, slow_input(upload(api)["id"], steps=70))  # 7 s: longer than the stop's grace (5 s)
    wait_job(api, job["id"], running)
    holder = holder_of(job, deployment.workers, since)

    asked = time.monotonic()
    holder.stop()  # exit status 0, checked by stop()
    assert time.monotonic() - asked < 10

    def run_again(job: dict[str, Any]) -> bool:
        return statuses(job).count("processing") == 2 or job["status"] in TERMINAL

    wait_job(api, job["id"], run_again, timeout=40)
    with deployment.repairing():  # once the other worker has the job: the new one cannot take it
        done = succeeded(api, job["id"])
    assert done["attempt"] == 1  # handed back cleanly: no attempt spent
    assert statuses(done) == ["queued", "processing", "queued", "processing", "succeeded"]
