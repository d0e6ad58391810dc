"""LoRA files on the tiny transformer: every format diffusers' Qwen-Image loader takes gives the LoRA at its
trained strength (checked against plain diffusers where diffusers itself reads the file), files for other
models are refused, and every failure is one line naming the file. Each layer's effective weight delta
(`scale * B @ A`, which alone decides the transformer's output) is compared; one test compares pixels
through the engine."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from reangle.core.camera import CameraPose
from reangle.core.edit import ANGLES, EditRequest
from reangle.engine.base import plan_for
from reangle.engine.lora import load_lora, read_lora_file, resolve_lora_file
from reangle.engine.qwen import QwenConfig, QwenEngine
from reangle.errors import LoraLoadError
from tests.engine.tiny_support import IMAGES, SIZE

pytestmark = pytest.mark.tiny

RANK, ALPHA = 4, 16.0  # a scale of 4: a power of two, so folding it into lora_B is exact
TARGETS = (
    "attn.to_q",
    "attn.to_out.0",
    "attn.add_k_proj",
    "img_mlp.net.2",
    "txt_mlp.net.0.proj",
    "img_mod.1",
)
Pairs = dict[str, tuple[torch.Tensor, torch.Tensor]]


def tiny_pipe() -> Any:
    from diffusers import QwenImageEditPlusPipeline

    from reangle.engine.tiny import build_tiny_components

    return QwenImageEditPlusPipeline(**build_tiny_components())


@pytest.fixture(scope="module")
def pairs() -> Pairs:
    """module -> (lora_A, lora_B) of one random LoRA over the tiny transformer."""
    transformer = tiny_pipe().transformer
    generator = torch.Generator().manual_seed(3)
    found = {}
    for block in range(len(transformer.transformer_blocks)):
        for target in TARGETS:
            module = f"transformer_blocks.{block}.{target}"
            layer = transformer.get_submodule(module)
            found[module] = (
                torch.randn(RANK, layer.in_features, generator=generator) * 0.3,
                torch.randn(layer.out_features, RANK, generator=generator) * 0.3,
            )
    return found


def expected_deltas(pairs: Pairs) -> dict[str, torch.Tensor]:
    return {module: (ALPHA / RANK) * up @ down for module, (down, up) in pairs.items()}


def delta_weights(pipe: Any, adapter: str) -> dict[str, torch.Tensor]:
    return {
        name: module.get_delta_weight(adapter)
        for name, module in pipe.transformer.named_modules()
        if adapter in getattr(module, "lora_A", {})
    }


def assert_same_deltas(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert sorted(actual) == sorted(expected)
    for module, delta in expected.items():
        torch.testing.assert_close(actual[module], delta, rtol=1e-5, atol=1e-6, msg=module)


# Writers: the same LoRA in each format --------------------------------------------------------------------


def diffusers_with_metadata(pairs: Pairs, path: Path) -> None:
    """What diffusers' own `save_lora_weights` writes for a peft adapter with lora_alpha != r."""
    from diffusers import QwenImageEditPlusPipeline
    from peft import LoraConfig

    layers = {
        f"{module}.lora_{part}.weight": pair[i]
        for module, pair in pairs.items()
        for i, part in enumerate("AB")
    }
    config = LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=sorted(pairs))
    QwenImageEditPlusPipeline.save_lora_weights(
        path.parent,
        transformer_lora_layers=layers,
        weight_name=path.name,
        transformer_lora_adapter_metadata=config.to_dict(),
    )


def saver(
    key_of: Callable[[str, str], str], *, alpha: bool, prefix: str = ""
) -> Callable[[Pairs, Path], None]:
    """A writer of keys `prefix + key_of(module, "down"|"up")`; with `alpha` an `.alpha` tensor per module and
    the weights as trained, else the scale folded into the up weights (alpha = rank)."""

    def write(pairs: Pairs, path: Path) -> None:
        from safetensors.torch import save_file

        tensors = {}
        for module, (down, up) in pairs.items():
            name = key_of(module, "down")
            tensors[prefix + name] = down
            tensors[prefix + key_of(module, "up")] = up if alpha else up * (ALPHA / RANK)
            if alpha:
                tensors[prefix + name.rsplit(".lora_", 1)[0] + ".alpha"] = torch.tensor(ALPHA)
        save_file(tensors, str(path))

    return write


def peft_key(module: str, part: str) -> str:
    return f"{module}.lora_{'A' if part == 'down' else 'B'}.weight"


def peft_default_key(module: str, part: str) -> str:
    return f"{module}.lora_{'A' if part == 'down' else 'B'}.default.weight"


def kohya_key(module: str, part: str) -> str:
    return f"{module}.lora_{part}.weight"


def kohya_unet_key(module: str, part: str) -> str:
    return f"lora_unet_{module.replace('.', '_')}.lora_{part}.weight"


#: (format, writer, whether plain diffusers' `load_lora_weights(path)` loads it right by itself)
FORMATS = [
    ("diffusers with lora_adapter_metadata", diffusers_with_metadata, True),
    ("diffusers, prefixed", saver(peft_key, alpha=False, prefix="transformer."), True),
    ("diffusers, prefixed, with alpha", saver(peft_key, alpha=True, prefix="transformer."), False),
    ("peft, bare", saver(peft_key, alpha=False), False),
    ("peft, bare, .default.", saver(peft_default_key, alpha=False), True),
    ("peft, prefixed, .default.", saver(peft_default_key, alpha=False, prefix="transformer."), False),
    ("kohya with alpha", saver(kohya_key, alpha=True), True),
    ("kohya without alpha", saver(kohya_key, alpha=False), False),
    ("kohya, prefixed, with alpha", saver(kohya_key, alpha=True, prefix="transformer."), False),
    ("kohya lora_unet_ with alpha", saver(kohya_unet_key, alpha=True), True),
    ("kohya lora_unet_ without alpha", saver(kohya_unet_key, alpha=False), True),
    ("diffusion_model. with alpha", saver(peft_key, alpha=True, prefix="diffusion_model."), True),
    ("diffusion_model. kohya without alpha", saver(kohya_key, alpha=False, prefix="diffusion_model."), True),
]


@pytest.mark.parametrize(
    ("writer", "diffusers_reads_it"), [f[1:] for f in FORMATS], ids=[f[0] for f in FORMATS]
)
def test_every_format_loads_at_its_trained_strength_as_plain_diffusers_does(
    pairs: Pairs, tmp_path: Path, writer: Callable[[Pairs, Path], None], diffusers_reads_it: bool
) -> None:
    path = tmp_path / "lora.safetensors"
    writer(pairs, path)
    pipe = tiny_pipe()
    assert load_lora(pipe, "x", read_lora_file(path)) is None
    ours = delta_weights(pipe, "x")
    assert_same_deltas(ours, expected_deltas(pairs))
    if diffusers_reads_it:
        plain = tiny_pipe()
        plain.load_lora_weights(str(path), adapter_name="x")
        assert_same_deltas(ours, delta_weights(plain, "x"))


def test_metadata_strength_reaches_the_engines_pixels(
    pairs: Pairs, tmp_path: Path, config: QwenConfig
) -> None:
    """The angle LoRA saved with lora_alpha = 4 r, against the same LoRA with the scale folded into its
    weights: the same pictures (a file read without its metadata would run at a quarter of the strength)."""
    with_metadata, folded = tmp_path / "metadata.safetensors", tmp_path / "folded.safetensors"
    diffusers_with_metadata(pairs, with_metadata)
    saver(peft_key, alpha=False, prefix="transformer.")(pairs, folded)
    request = EditRequest(seed=2, pose=CameraPose(azimuth_deg=90), **SIZE)
    pictures = []
    for path in (with_metadata, folded):
        engine = QwenEngine(replace(config, loras={**config.loras, ANGLES: str(path)}))
        pictures.append(engine.edit(IMAGES, plan_for(engine, request, IMAGES)).images[0])
    assert pictures[0].tobytes() == pictures[1].tobytes()
    header = json.loads(read_safetensors_header(with_metadata)["lora_adapter_metadata"])
    assert header["transformer.lora_alpha"] == ALPHA  # the file really carries alpha != r


def read_safetensors_header(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return dict(handle.metadata())


def test_a_lora_with_a_bias_on_lora_b_loads_as_plain_diffusers_loads_it(pairs: Pairs, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "bias.safetensors"
    tensors = {}
    for module, (down, up) in pairs.items():
        tensors[f"transformer.{module}.lora_A.weight"] = down
        tensors[f"transformer.{module}.lora_B.weight"] = up
        tensors[f"transformer.{module}.lora_B.bias"] = torch.full((up.shape[0],), 0.25)
    save_file(tensors, str(path))
    ours, plain = tiny_pipe(), tiny_pipe()
    load_lora(ours, "x", read_lora_file(path))
    plain.load_lora_weights(str(path), adapter_name="x")
    assert_same_deltas(delta_weights(ours, "x"), delta_weights(plain, "x"))
    for module in pairs:
        bias = ours.transformer.get_submodule(module).lora_B["x"].bias
        assert bias is not None
        torch.testing.assert_close(bias, plain.transformer.get_submodule(module).lora_B["x"].bias)


# Files for another model ----------------------------------------------------------------------------------


def with_extra_module(pairs: Pairs, module: str, shape: tuple[int, int]) -> Pairs:
    return pairs | {module: (torch.ones(RANK, shape[0]), torch.ones(shape[1], RANK))}


def test_a_file_naming_modules_the_transformer_lacks_is_refused_with_their_names(
    pairs: Pairs, tmp_path: Path
) -> None:
    path = tmp_path / "other-model.safetensors"
    saver(peft_key, alpha=False, prefix="transformer.")(
        with_extra_module(pairs, "transformer_blocks.7.attn.to_q", (48, 48)), path
    )
    pipe = tiny_pipe()
    with pytest.raises(LoraLoadError, match=r"other-model\.safetensors names 1 modules") as caught:
        load_lora(pipe, "x", read_lora_file(path))
    assert "transformer_blocks.7.attn.to_q" in caught.value.message
    assert "REANGLE_LORA_STRICT=false" in (caught.value.hint or "")
    assert delta_weights(pipe, "x") == {}  # nothing half-loaded


def test_not_strict_loads_the_modules_that_match_and_names_the_rest(pairs: Pairs, tmp_path: Path) -> None:
    path = tmp_path / "other-model.safetensors"
    saver(peft_key, alpha=False, prefix="transformer.")(
        with_extra_module(pairs, "transformer_blocks.7.attn.to_q", (48, 48)), path
    )
    pipe = tiny_pipe()
    note = load_lora(pipe, "x", read_lora_file(path), strict=False)
    assert note is not None
    assert "left out 1 modules" in note
    assert "transformer_blocks.7.attn.to_q" in note
    assert_same_deltas(delta_weights(pipe, "x"), expected_deltas(pairs))


def test_a_shape_that_differs_is_refused_even_when_not_strict(pairs: Pairs, tmp_path: Path) -> None:
    path = tmp_path / "wider.safetensors"
    saver(peft_key, alpha=False, prefix="transformer.")(
        with_extra_module(pairs, "transformer_blocks.0.attn.to_k", (99, 48)), path
    )
    with pytest.raises(
        LoraLoadError, match=r"shapes differ at transformer_blocks\.0\.attn\.to_k \(file 99->48"
    ):
        load_lora(tiny_pipe(), "x", read_lora_file(path), strict=False)


# Files that are not LoRAs reangle can read: one line naming the file and the reason -------------------------


def save(tensors: dict[str, torch.Tensor], path: Path, header: dict[str, str] | None = None) -> None:
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata=header)


A, B = torch.ones(4, 8), torch.ones(8, 4)
BROKEN = [
    ("kohya up without down", {"m.lora_up.weight": B, "m.alpha": torch.tensor(4.0)}, None, "do not convert"),
    ("kohya down without up", {"m.lora_down.weight": A}, None, "do not convert"),
    ("lora_A without lora_B", {"transformer.m.lora_A.weight": A}, None, "m has lora_A but not lora_B"),
    ("not LoRA keys", {"transformer.m.weight": A}, None, "unexpected keys transformer.m.weight"),
    ("ranks that differ", {"m.lora_A.weight": A, "m.lora_B.weight": torch.ones(8, 3)}, None, "rank-r pair"),
    (
        "a DoRA",
        {"m.lora_A.weight": A, "m.lora_B.weight": B, "m.lora_magnitude_vector": torch.ones(8)},
        None,
        "DoRA",
    ),
    (
        "metadata that is not JSON",
        {"m.lora_A.weight": A, "m.lora_B.weight": B},
        {"lora_adapter_metadata": "{"},
        "not JSON",
    ),
    ("no tensors", {}, None, "holds no tensors"),
]


@pytest.mark.parametrize(("tensors", "header", "reason"), [b[1:] for b in BROKEN], ids=[b[0] for b in BROKEN])
def test_a_file_reangle_cannot_read_is_one_line_naming_it_and_why(
    tmp_path: Path, tensors: dict[str, torch.Tensor], header: dict[str, str] | None, reason: str
) -> None:
    path = tmp_path / "broken.safetensors"
    save(tensors, path, header)
    with pytest.raises(LoraLoadError) as caught:
        read_lora_file(path)
    message = caught.value.message
    assert path.name in message
    assert str(tmp_path) not in message  # the folder is the server's: users may see this error in a job
    assert reason in message
    assert "\n" not in message


def test_a_file_that_is_not_safetensors_is_named(tmp_path: Path) -> None:
    path = tmp_path / "notes.safetensors"
    path.write_text("not a tensor file")
    with pytest.raises(
        LoraLoadError, match=r"notes\.safetensors is not a readable safetensors LoRA file"
    ) as caught:
        read_lora_file(path)
    assert str(tmp_path) not in caught.value.message


def test_a_missing_local_lora_is_named_without_its_folder(tmp_path: Path) -> None:
    with pytest.raises(LoraLoadError, match=r"not found: gone\.safetensors") as caught:
        resolve_lora_file(str(tmp_path / "gone.safetensors"), offline=True)
    assert str(tmp_path) not in caught.value.message


# Order of failure -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("problem", ["missing", "not a LoRA"])
def test_a_bad_lora_fails_before_the_model_loads(config: QwenConfig, tmp_path: Path, problem: str) -> None:
    path = tmp_path / "angles.safetensors"
    if problem == "not a LoRA":
        save({"transformer.m.weight": A}, path)
    builds: list[Any] = []
    engine = QwenEngine(
        replace(config, loras={**config.loras, ANGLES: str(path)}, pipeline_factory=builds.append)
    )
    with pytest.raises(LoraLoadError, match=r"angles\.safetensors"):
        engine.load()
    assert builds == []


def test_the_setting_reaches_the_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    from reangle.settings import Settings

    assert QwenEngine.from_settings(Settings()).config.lora_strict is True
    monkeypatch.setenv("REANGLE_LORA_STRICT", "false")
    assert QwenEngine.from_settings(Settings()).config.lora_strict is False
