"""The bodies webhooks carry: a native job as `job_json` renders it (absolute download links on
REANGLE_PUBLIC_BASE_URL, else on the base URL of the request that submitted it) in a Standard Webhooks
envelope, or, for a job submitted through the RunPod dialect, its RunPod `/status` body as RunPod sends it."""

from __future__ import annotations

import base64
import json

from reangle.api.render import Links, iso, job_json
from reangle.api.signing import UrlSigner
from reangle.core.jobs import Job
from reangle.core.ports import WebhookDelivery
from reangle.core.service import JobService
from reangle.core.webhooks import RUNPOD, NotReady, Undeliverable, envelope
from reangle.dialects import runpod_schemas as rp
from reangle.errors import NotFound


class PayloadRenderer:
    def __init__(
        self,
        service: JobService,
        signer: UrlSigner,
        *,
        public_base_url: str | None,
        url_ttl_s: float,
        demo: bool,
    ) -> None:
        self.service, self.signer = service, signer
        self.public_base_url, self.url_ttl_s, self.demo = public_base_url, url_ttl_s, demo

    def render(self, delivery: WebhookDelivery) -> str:
        """The body of `delivery`, from its job as it stands now. NotReady: a RunPod batch with items still
        running; Undeliverable: the job is gone."""
        job = self.service.store.get_job(delivery.job_id)
        if job is None or job.webhook is None:
            raise Undeliverable(f"job {delivery.job_id} was deleted before its webhook was delivered")
        if job.webhook.flavor == RUNPOD:
            return json.dumps(self._runpod_body(job))
        links = Links(
            signer=self.signer,
            base_url=(self.public_base_url or job.webhook.base_url).rstrip("/"),
            ttl_s=self.url_ttl_s,
            store=self.service.store,
            blobs=self.service.assets.blobs,
            demo=self.demo,
        )
        return envelope(delivery.type, iso(delivery.created_at) or "", job_json(job, links)).decode()

    def _runpod_body(self, job: Job) -> dict[str, object]:
        runpod_id = job.batch_id or job.id
        jobs = self.service.store.batch_jobs(job.batch_id) if job.batch_id else [job]
        status = rp.runpod_status(jobs)
        if status not in rp.TERMINAL:
            raise NotReady(f"RunPod job {runpod_id} is still {status}")
        images: dict[str, str] = {}
        if status == rp.COMPLETED:
            for asset_id in rp.output_asset_ids(jobs):
                images[asset_id] = self._base64(job.owner, asset_id, runpod_id)
        return rp.status_body(runpod_id, jobs, images.__getitem__)

    def _base64(self, owner: str, asset_id: str, runpod_id: str) -> str:
        try:
            record = self.service.assets.get(owner, asset_id)
            data = self.service.assets.blobs.read(record.sha256)
        except (NotFound, OSError):
            raise Undeliverable(f"the results of job {runpod_id} have expired") from None
        return base64.b64encode(data).decode("ascii")
