"""What a job needs before the engine runs it: its input images, its prompt rewritten when it asks for that,
its model's and its own LoRAs as checked local files, and the engine requests built from all of those."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace

from PIL import Image

from reangle.core.edit import EditRequest, GenerateRequest, LoraUse
from reangle.core.jobs import Job
from reangle.core.lora_refs import LoraRef
from reangle.core.models import AnyInput, ModelSpec, TextToImageInput, WanImageInput, prompt_excess, rendered
from reangle.core.service import JobService, model_spec
from reangle.engine.base import StopCheck, random_seed
from reangle.engine.lora_check import ModelLayers
from reangle.engine.lora_sources import LoraSources, ResolvedLora
from reangle.engine.rewriter import PromptRewriter, Rewrite, RewriteTask, failure_detail, kept
from reangle.errors import InvalidInput, SourceUnavailable, Unavailable

log = logging.getLogger(__name__)

EngineRequest = EditRequest | GenerateRequest
#: The layers a LoRA may target in the engine's model for a task (True: text-to-image).
LayersFor = Callable[[bool], ModelLayers]


def fitting(rewrite: Rewrite, spec: ModelSpec, validated: AnyInput) -> Rewrite:
    """`rewrite`, or the user's words (`overlong`) when the rewrite would pass the model's prompt limit once
    rendered: the user's words, checked at submit, fit."""
    excess = prompt_excess(spec, validated, rewrite.prompt) if rewrite.rewritten else None
    if excess is None:
        return rewrite
    detail = f"the rewritten prompt's {excess.describe()}"
    return kept(validated.prompt, "overlong", detail, seconds=rewrite.seconds)


@dataclass(frozen=True, kw_only=True)
class PreparedJob:
    spec: ModelSpec
    input: AnyInput
    images: list[Image.Image]
    requests: list[EngineRequest]
    #: What the rewriter made of the prompt; None when the job did not ask for a rewrite.
    rewrite: Rewrite | None
    loras: list[ResolvedLora]

    @property
    def generates(self) -> bool:
        return isinstance(self.input, TextToImageInput)


class JobPreparer:
    def __init__(
        self,
        service: JobService,
        *,
        rewriter: PromptRewriter | None = None,
        loras: LoraSources | None = None,
        layers: LayersFor | None = None,
    ) -> None:
        self.service, self.rewriter, self.loras, self.layers = service, rewriter, loras, layers

    def validated(self, job: Job) -> tuple[ModelSpec, AnyInput]:
        spec = model_spec(job.model)
        return spec, spec.validate_stored(job.kind, job.input)

    async def load_images(self, job: Job, image_ids: Sequence[str]) -> list[Image.Image]:
        records = [self.service.assets.get(job.owner, asset_id) for asset_id in image_ids]
        return await asyncio.to_thread(lambda: [self.service.assets.load_image(r) for r in records])

    @contextlib.asynccontextmanager
    async def prepared(self, job: Job) -> AsyncIterator[PreparedJob]:
        """The job ready for a local engine; its LoRA files stay in the cache until the block ends."""
        spec, validated = self.validated(job)
        if isinstance(validated, WanImageInput):
            raise TypeError(f"model {spec.id} runs remotely, not on a local engine")
        images = await self.load_images(job, validated.images)
        generates = isinstance(validated, TextToImageInput)
        task: RewriteTask = "generate" if generates else "edit"
        prompt, rewrite = await self.prompt(
            spec, validated, images, task, should_stop=self.service.stop_flag(job).is_set
        )
        validated = validated.model_copy(update={"prompt": prompt})
        refs = [*spec.loras, *validated.lora_refs()]
        async with self._resolved(refs, generates) as loras:
            extra = tuple(LoraUse(adapter=lora.adapter, weight=lora.scale, path=lora.path) for lora in loras)
            if isinstance(validated, TextToImageInput):
                requests: list[EngineRequest] = list(validated.generate_requests(random_seed()))
            else:
                requests = list(validated.edit_requests())
            requests = [replace(request, extra_loras=extra) for request in requests]
            yield PreparedJob(
                spec=spec, input=validated, images=images, requests=requests, rewrite=rewrite, loras=loras
            )

    async def prompt(
        self,
        spec: ModelSpec,
        validated: AnyInput,
        images: list[Image.Image],
        task: RewriteTask,
        *,
        should_stop: StopCheck | None = None,
    ) -> tuple[str, Rewrite | None]:
        """The prompt the model runs: the user's words, rewritten when the job asks for it, in the model's
        template; and the rewrite, if any. A rewrite that would pass the model's prompt limit once rendered
        is not used (`overlong`): the user's words, checked at submit, fit. `should_stop` (the job's cancel)
        ends a rewrite under way at its next token."""
        if not validated.rewrite_prompt:
            return rendered(spec, validated), None
        rewrite = await self.rewrite(validated.prompt, images, task, should_stop=should_stop)
        rewrite = fitting(rewrite, spec, validated)
        return rendered(spec, validated, rewrite.prompt), rewrite

    async def rewrite(
        self,
        words: str,
        images: list[Image.Image],
        task: RewriteTask,
        *,
        should_stop: StopCheck | None = None,
    ) -> Rewrite:
        """The rewriter's take on the user's `words`, or why they were kept; never raises for the rewriter."""
        if self.rewriter is None:
            return kept(words, "skipped", "this server runs no prompt rewriter (REANGLE_REWRITER_MODEL=off)")
        if not words.strip():
            return kept(words, "skipped", "there were no words of your own to rewrite")
        rewriter = self.rewriter
        try:
            return await asyncio.to_thread(
                lambda: rewriter.rewrite(words, images, task=task, should_stop=should_stop)
            )
        except Exception as exc:  # a rewriter of another make may raise: the user's words stand
            log.warning("prompt rewriter failed, keeping the original prompt", exc_info=True)
            return kept(words, "error", failure_detail(exc))

    @contextlib.asynccontextmanager
    async def _resolved(self, refs: list[LoraRef], generates: bool) -> AsyncIterator[list[ResolvedLora]]:
        if not refs:
            yield []
            return
        if self.loras is None or self.layers is None:
            raise InvalidInput("this server takes no LoRAs of a request's own", field=refs[0].field)
        layers = await asyncio.to_thread(self.layers, generates)  # may load the model, or read its config
        fetched = False
        try:
            async with self.loras.resolved(refs, layers) as found:
                fetched = True
                yield found
        except Unavailable as exc:
            if fetched:  # the store, while the job ran: the runner hands the job back
                raise
            hint = "submit the job again once the LoRA's host answers"
            raise SourceUnavailable(exc.message, hint=hint) from exc
