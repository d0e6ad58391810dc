"""VAE latents of reference images, kept across edits: a picture sent again is not encoded again.

Trying angle after angle of one photo sends the same reference image with every edit. The pipeline encodes
references with `sample_mode="argmax"` (the latent mean, no sampling), so kept latents are exactly what a
new encoding would give. An entry is used only for an identical image tensor: same shape, dtype, device and
values.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

#: The engine setting that sets how many reference images keep their latents between edits.
REFERENCE_CACHE_SETTING = "REANGLE_REFERENCE_CACHE"


class ReferenceLatents:
    """The latents of the `keep` most recently used reference images (and of all images of a running edit)."""

    def __init__(self, keep: int) -> None:
        if keep < 0:
            raise ValueError(f"keep must be 0 or more, not {keep}")
        self.keep = keep
        #: (image tensor, its latents), least recently used first.
        self._entries: list[tuple[Any, Any]] = []

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()

    @contextlib.contextmanager
    def serving(self, pipe: Any) -> Iterator[None]:
        """Within the block, the pipeline's reference encodings go through these entries; each distinct image
        is encoded at most once, whatever `keep` is. Afterwards only the `keep` most recently used entries
        stay, and the pipeline's own method is back, also after an error or a cancel."""
        had_own = "_encode_vae_image" in vars(pipe)
        encode = pipe._encode_vae_image

        def encode_once(image: Any, generator: Any) -> Any:
            latents = self._take(image)
            if latents is None:
                latents = encode(image=image, generator=generator)
            self._entries.append((image, latents))
            return latents

        pipe._encode_vae_image = encode_once
        try:
            yield
        finally:
            if had_own:
                pipe._encode_vae_image = encode
            else:
                del pipe._encode_vae_image
            del self._entries[: max(len(self._entries) - self.keep, 0)]

    def _take(self, image: Any) -> Any:
        """The latents of `image`, or None. A found entry is removed; the caller adds it back as newest."""
        import torch

        for index, (known, latents) in enumerate(self._entries):
            if (
                known.shape == image.shape
                and known.dtype == image.dtype
                and known.device == image.device
                and torch.equal(known, image)
            ):
                del self._entries[index]
                return latents
        return None
