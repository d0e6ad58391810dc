"""Several views of the same input images (an orbit): all their prompts in one text-encoder forward.

The pipeline takes one prompt per call, so each view is still its own call; the VAE encoding of the reference
images is shared too, by `ReferenceLatents`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from PIL import Image

from reangle.core.edit import EditPlan

_PICTURE = "Picture {}: <|vision_start|><|image_pad|><|vision_end|>"


def cfg_negative_prompt(plan: EditPlan) -> str | None:
    """The negative prompt if the pipeline runs true CFG with it (its own `do_true_cfg`), else None."""
    return plan.negative_prompt if plan.true_cfg_scale > 1 else None


def view_prompt_arguments(
    pipe: Any, images: Sequence[Image.Image], plans: Sequence[EditPlan]
) -> list[dict[str, Any]]:
    """The pipeline's prompt arguments for each plan, from one text-encoder forward over all distinct prompts
    (negative prompts of true-CFG plans included)."""
    negatives = [cfg_negative_prompt(plan) for plan in plans]
    texts = [plan.prompt for plan in plans] + [negative for negative in negatives if negative is not None]
    distinct = list(dict.fromkeys(texts))
    embeds = dict(zip(distinct, encode_prompts(pipe, images, distinct), strict=True))
    arguments = []
    for plan, negative in zip(plans, negatives, strict=True):
        embed, mask = embeds[plan.prompt]
        call: dict[str, Any] = {"prompt": None, "prompt_embeds": embed, "prompt_embeds_mask": mask}
        if negative is not None:
            negative_embed, negative_mask = embeds[negative]
            call |= {"negative_prompt_embeds": negative_embed, "negative_prompt_embeds_mask": negative_mask}
        arguments.append(call)
    return arguments


def encode_prompts(pipe: Any, images: Sequence[Image.Image], prompts: Sequence[str]) -> list[tuple[Any, Any]]:
    """(embeddings [1, L, D], mask [1, L]) of each prompt with `images`, from ONE text-encoder forward.

    This is `QwenImageEditPlusPipeline._get_qwen_prompt_embeds` on a batch: each prompt gets its own copy of
    the condition images (sized as `__call__` sizes them). Each result is cut back to its own length, so it
    has the shape and all-ones mask of a single-prompt call, and the transformer runs without attention mask.
    """
    import diffusers.pipelines.qwenimage.pipeline_qwenimage_edit_plus as edit_plus
    import torch

    condition = []
    for image in images:
        width, height = edit_plus.calculate_dimensions(
            edit_plus.CONDITION_IMAGE_SIZE, image.width / image.height
        )
        condition.append(pipe.image_processor.resize(image, height, width))
    pictures = "".join(_PICTURE.format(k + 1) for k in range(len(images)))
    texts = [pipe.prompt_template_encode.format(pictures + prompt) for prompt in prompts]
    device = pipe._execution_device
    with torch.inference_mode():
        inputs = pipe.processor(
            text=texts, images=condition * len(prompts), padding=True, return_tensors="pt"
        ).to(device)
        hidden = pipe.text_encoder(
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            pixel_values=inputs.get("pixel_values"),
            image_grid_thw=inputs.get("image_grid_thw"),
            output_hidden_states=True,
        ).hidden_states[-1]
        valid = inputs["attention_mask"].bool()
        start = pipe.prompt_template_encode_start_idx
        encoded = []
        for row in range(len(prompts)):
            embed = hidden[row][valid[row]][start:].to(pipe.text_encoder.dtype).unsqueeze(0)
            encoded.append((embed, torch.ones(embed.shape[:2], dtype=torch.long, device=embed.device)))
    return encoded
