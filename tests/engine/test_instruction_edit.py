"""Edit by instruction ("make it night"): four edits of a picture on Kontext and Flux.2 [klein], refused elsewhere."""

from __future__ import annotations

import dataclasses

import pytest
from PIL import Image, ImageDraw

from engine.requests import Action, Feature, RenderError, RenderRequest
from tests.engine.conftest import TILE, mean_abs


def picture(colour=(220, 30, 30)) -> Image.Image:
    image = Image.new("RGB", (TILE, TILE), (30, 60, 200))
    ImageDraw.Draw(image).ellipse((16, 16, 48, 48), fill=colour)
    return image


def edit_request(init_image: Image.Image, prompt: str = "make it night") -> RenderRequest:
    return RenderRequest(
        action=Action.EDIT,
        prompt=prompt,
        seeds=(1, 2, 3, 4),
        width=TILE,
        height=TILE,
        steps=3,
        guidance_scale=2.5,
        init_image=init_image,
    )


@pytest.fixture
def kontext_folder(tmp_path):
    from diffusers import FluxKontextPipeline

    from engine.tiny import build_tiny_flux_pipeline

    folder = tmp_path / "kontext"
    FluxKontextPipeline(**build_tiny_flux_pipeline().components).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("family", ["flux-kontext", "flux2-klein"])
async def test_an_instruction_edits_the_picture_it_is_given(family, kontext_folder, family_folder):
    from engine.core import DiffusersEngine

    folder = kontext_folder if family == "flux-kontext" else family_folder("flux2-klein")
    async with DiffusersEngine(model="m", sources={"m": str(folder)}, device="cpu", batch_window_s=0.0) as engine:
        red = await engine.render(edit_request(picture()))
        assert [image.size for image in red.images] == [(TILE, TILE)] * 4
        assert min(mean_abs(a, b) for a, b in zip(red.images, red.images[1:], strict=False)) > 0  # four edits
        again = await engine.render(edit_request(picture()))
        assert all(mean_abs(a, b) == 0 for a, b in zip(red.images, again.images, strict=True))  # seeds hold
        # The picture is what the model works from: another picture, the same seeds, another result.
        green = await engine.render(edit_request(picture((30, 200, 30))))
        assert all(mean_abs(a, b) > 0 for a, b in zip(red.images, green.images, strict=True))


async def test_families_that_cannot_edit_by_instruction_refuse_with_a_reason(family_folder):
    from engine.core import DiffusersEngine

    async with DiffusersEngine(
        model="sd3", sources={"sd3": str(family_folder("sd3"))}, device="cpu", batch_window_s=0.0
    ) as engine:
        assert "Stable Diffusion 3 models cannot edit a picture from an instruction" in engine.supports(
            "sd3", Action.EDIT
        )
        with pytest.raises(RenderError, match="cannot edit a picture from an instruction"):
            await engine.render(edit_request(picture()))
    with pytest.raises(ValueError, match="the instruction is empty"):
        from engine.actions.edit import check_inputs

        check_inputs(edit_request(picture(), prompt=" "))


def test_a_size_the_family_cannot_draw_is_refused_before_queueing():
    from engine.fake import FakeEngine
    from engine.requests import ModelHints, refusal

    engine = FakeEngine(models=["flux"], hints={"flux": ModelHints("Flux.1", 28, 3.5, 16)})
    request = RenderRequest(action=Action.OUTPAINT, prompt="a harbour", seeds=(1,), width=72, height=64)
    assert refusal(engine, request) == (
        "Flux.1 models draw sizes in multiples of 16 px, and this would be 72×64: try another --ar or zoom"
    )
    assert (
        refusal(engine, RenderRequest(action=Action.IMAGINE, prompt="a harbour", seeds=(1,), width=80, height=64))
        is None
    )


async def test_the_engine_refuses_a_size_its_family_cannot_draw_in_the_same_words(family_folder):
    from engine.core import DiffusersEngine

    async with DiffusersEngine(model="flux", sources={"flux": str(family_folder("flux"))}, device="cpu") as engine:
        request = RenderRequest(action=Action.IMAGINE, prompt="a harbour", seeds=(1,), width=72, height=64, steps=2)
        with pytest.raises(
            RenderError, match="Flux.1 models draw sizes in multiples of 16 px, and this would be 72×64"
        ):
            await engine.render(request)


@pytest.mark.parametrize("plus", [False, True], ids=["edit", "edit-plus"])
async def test_qwen_image_edit_edits_the_picture_its_text_encoder_is_shown(plus, family_folder):
    """Qwen-Image-Edit (and the 2509/2511 models' Plus pipeline), loaded from a folder as a real one is:
    the picture goes to the VAE and to the Qwen2.5-VL text encoder with the instruction."""
    import torch

    from engine.core import DiffusersEngine
    from engine.family import QWEN_IMAGE_EDIT, QWEN_IMAGE_EDIT_PLUS
    from engine.loading import family_of_source

    folder = family_folder("qwen-image-edit-plus" if plus else "qwen-image-edit")
    family = QWEN_IMAGE_EDIT_PLUS if plus else QWEN_IMAGE_EDIT
    assert family_of_source(folder) is family
    async with DiffusersEngine(model="m", sources={"m": str(folder)}, device="cpu", batch_window_s=0.0) as engine:
        pipe = engine._model("m").text2img
        assert type(pipe).__name__ == ("QwenImageEditPlusPipeline" if plus else "QwenImageEditPipeline")
        # The text encoder reads the picture: the same instruction about two pictures is two embeddings.
        red, green = (
            family.encode_instruction(pipe, ["make it night"], None, picture(c), torch.device("cpu"))
            for c in ((220, 30, 30), (30, 200, 30))
        )
        assert not torch.equal(red["prompt_embeds"], green["prompt_embeds"])
        edited = await engine.render(dataclasses.replace(edit_request(picture()), guidance_scale=2.0, steps=2))
        assert [image.size for image in edited.images] == [(TILE, TILE)] * 4
        assert min(mean_abs(a, b) for a, b in zip(edited.images, edited.images[1:], strict=False)) > 0
        for action in (Action.IMAGINE, Action.VARIATION, Action.INPAINT):
            assert engine.supports("m", action).startswith(f"{family.name} models cannot")
        if plus:  # one prompt a call: the four tiles cannot get a --chaos each
            assert "cannot spread an edit's four pictures apart with --chaos" in engine.supports("m", Feature.CHAOS)
