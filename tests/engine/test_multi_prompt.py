"""`::` multi-prompt weights: each part encoded on its own, the embeddings averaged by weight, on every
family whose text encoder gives prompts one length; the others refuse in a sentence naming them."""

from __future__ import annotations

import pytest
import torch

from engine.actions.common import encode_prompts
from engine.family import BY_KEY, of_pipeline
from engine.params import ParameterError, PromptPart, parts_text, prompt_parts
from engine.requests import Action, Feature, RenderRequest, features_of
from engine.tiny import TINY_BUILDERS

CPU = torch.device("cpu")


def _request(prompt: str, negative: str = "", seeds: tuple[int, ...] = (1,)) -> RenderRequest:
    return RenderRequest(action=Action.IMAGINE, prompt=prompt, seeds=seeds, negative_prompt=negative, width=64)


def test_parts_and_weights_are_read_as_midjourney_writes_them():
    assert prompt_parts("hot:: dog::-0.5") == (PromptPart("hot", 1.0), PromptPart("dog", -0.5))
    assert prompt_parts("cat::2 dog") == (PromptPart("cat", 2.0), PromptPart("dog", 1.0))
    assert prompt_parts("space ship::") == (PromptPart("space ship", 1.0),)
    assert prompt_parts("a red fox") == (PromptPart("a red fox", 1.0),)
    assert prompt_parts("a::1.5 b:: ::") == (PromptPart("a", 1.5), PromptPart("b", 1.0))
    assert parts_text(prompt_parts("hot:: t-shirt dog::-0.5")) == "hot 1 · t-shirt dog −0.5"


@pytest.mark.parametrize(
    ("prompt", "said"),
    [
        ("hot::1 dog::-1", "add up to 0"),
        ("::2 dog", "weighs nothing"),
        ("cat::50 dog", "out of range"),
    ],
)
def test_bad_weights_are_one_sentence(prompt, said):
    with pytest.raises(ParameterError, match=said):
        prompt_parts(prompt)


def test_only_two_or_more_parts_ask_the_family_for_weights():
    assert Feature.MULTI_PROMPT in features_of(_request("hot:: dog::-0.5"))
    assert Feature.MULTI_PROMPT not in features_of(_request("cat::2"))
    assert Feature.MULTI_PROMPT not in features_of(_request("a time: 12:30"))


def test_weights_change_the_sd_conditioning_as_a_weighted_average(tiny_pipe):
    def embeds(prompt: str) -> torch.Tensor:
        return encode_prompts(tiny_pipe, [_request(prompt)], CPU)["prompt_embeds"][0]

    cat, dog = embeds("cat"), embeds("dog")
    assert torch.allclose(embeds("cat::2 dog"), (2 * cat + dog) / 3, atol=1e-5)
    assert torch.allclose(embeds("cat:: dog::-0.5"), (cat - 0.5 * dog) / 0.5, atol=1e-5)
    assert torch.equal(embeds("cat::2"), cat)  # one part: its weight changes nothing
    assert not torch.allclose(embeds("cat::2 dog"), embeds("cat:: dog"), atol=1e-4)
    assert not torch.allclose(embeds("cat:: dog"), embeds("cat dog"), atol=1e-4)  # not drawn as text


def test_a_batch_mixes_weighted_and_plain_prompts_and_keeps_each_negative(tiny_pipe):
    requests = [_request("cat::3 dog", negative="blur", seeds=(1, 2)), _request("fox", negative="rain")]
    batch = encode_prompts(tiny_pipe, requests, CPU)
    alone = [encode_prompts(tiny_pipe, [r], CPU) for r in requests]
    assert batch["prompt_embeds"].shape[0] == 3  # one row per tile
    assert torch.allclose(batch["prompt_embeds"][0], alone[0]["prompt_embeds"][0], atol=1e-5)
    assert torch.allclose(batch["prompt_embeds"][2], alone[1]["prompt_embeds"][0], atol=1e-5)
    assert torch.allclose(batch["negative_prompt_embeds"][1], alone[0]["negative_prompt_embeds"][0], atol=1e-5)
    assert torch.allclose(batch["negative_prompt_embeds"][2], alone[1]["negative_prompt_embeds"][0], atol=1e-5)


@pytest.mark.parametrize("family", ["sdxl", "sd3", "flux", "flux2-klein"])
def test_every_fixed_length_family_weighs_parts_pooled_embeddings_too(family):
    pipe = TINY_BUILDERS[family](seed=0)
    assert of_pipeline(pipe).supports(Feature.MULTI_PROMPT) is None

    def embeds(prompt: str) -> dict[str, torch.Tensor]:
        return encode_prompts(pipe, [_request(prompt)], CPU)

    cat, dog, mixed = embeds("cat"), embeds("dog"), embeds("cat::3 dog")
    for name in ("prompt_embeds", "pooled_prompt_embeds"):
        if name in mixed:
            expected = (3 * cat[name][0].float() + dog[name][0].float()) / 4
            assert torch.allclose(mixed[name][0].float(), expected, atol=1e-4), name


@pytest.mark.parametrize("family", ["z-image", "qwen-image"])
def test_families_with_prompts_of_their_own_length_refuse_parts_by_name(family):
    reason = BY_KEY[family].supports(Feature.MULTI_PROMPT)
    assert reason is not None and reason.startswith(BY_KEY[family].name) and "::" in reason
    pipe = TINY_BUILDERS[family](seed=0)
    with pytest.raises(ValueError, match="multi-prompt"):
        encode_prompts(pipe, [_request("cat::2 dog")], CPU)
    assert encode_prompts(pipe, [_request("cat::2")], CPU)  # one part is one prompt: drawn
