"""What a member sees when they type a prompt: the jobs it makes, or the one-line reason it can't run."""

from __future__ import annotations

import dataclasses

import pytest

import bot.prompt
from bot.prompt import MAX_PROMPT_CHARS, PARAMETER_NAMES, ParsedPrompt, PromptError, parse_prompt


def one(text: str, **kwargs) -> ParsedPrompt:
    jobs = parse_prompt(text, **kwargs)
    assert len(jobs) == 1, jobs
    return jobs[0]


def error(text: str, **kwargs) -> str:
    with pytest.raises(PromptError) as caught:
        parse_prompt(text, **kwargs)
    message = str(caught.value)
    assert message and "\n" not in message and len(message) < 200
    return message


# --- parameters: every spelling, and both sides of every range edge ------------------------------

ACCEPTED = [
    # (prompt, field, value)
    ("cat --ar 3:2", "aspect", (3, 2)),
    ("cat --aspect 3:2", "aspect", (3, 2)),
    ("cat --ar 1920:1080", "aspect", (16, 9)),
    ("cat --ar 4:1", "aspect", (4, 1)),
    ("cat --ar 1:4", "aspect", (1, 4)),
    ("cat --ar 2:2", "aspect", (1, 1)),
    ("cat --ar 03:02", "aspect", (3, 2)),
    ("cat --seed 0", "seed", 0),
    ("cat --seed 4294967295", "seed", 4294967295),
    ("cat --no text", "negative", "text"),
    ("cat --no a, b", "negative", "a, b"),
    ("cat --no a,b ,, c  d", "negative", "a, b, c d"),
    ("cat --chaos 0", "chaos", 0),
    ("cat --chaos 100", "chaos", 100),
    ("cat --c 50", "chaos", 50),
    ("cat --stylize 0", "stylize", 0),
    ("cat --stylize 1000", "stylize", 1000),
    ("cat --s 250", "stylize", 250),
    ("cat --quality .25", "quality", 0.25),
    ("cat --q .5", "quality", 0.5),
    ("cat --q 0.5", "quality", 0.5),
    ("cat --q 0.50", "quality", 0.5),
    ("cat --q 1", "quality", 1.0),
    ("cat --q 1.0", "quality", 1.0),
    ("cat --q 2", "quality", 2.0),
    ("cat --stop 10", "stop", 10),
    ("cat --stop 100", "stop", 100),
    ("cat --tile", "tile", True),
    ("cat --model anything", "model", "anything"),  # no model list: the caller checks
    ("cat --AR 3:2", "aspect", (3, 2)),
    ("cat --Seed 7", "seed", 7),
    ("cat --TILE", "tile", True),
    ("cat —ar 3:2", "aspect", (3, 2)),  # em dash: phones autocorrect `--`
    ("cat –ar 3:2", "aspect", (3, 2)),  # en dash
    ("cat —-ar 3:2", "aspect", (3, 2)),  # `---` on a phone
    ("cat --iw 2", "image_weight", 2.0),
    ("cat --iw 0.5", "image_weight", 0.5),
    ("cat --iw 0", "image_weight", 0.0),
]


@pytest.mark.parametrize(("prompt", "field", "value"), ACCEPTED)
def test_parameter_is_read(prompt: str, field: str, value: object) -> None:
    job = one(prompt)
    assert getattr(job, field) == value
    assert job.text == "cat"


def test_nothing_typed_is_none_so_settings_apply() -> None:
    assert one("  a   dream\nof a\tgalaxy ") == ParsedPrompt(text="a dream of a galaxy", raw="a dream of a galaxy")


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ("cat --chaos 150", "`--chaos 150` is out of range: use 0–100."),
        ("cat --c -1", "`--c -1` is out of range: use 0–100."),
        ("cat --chaos 2.5", "`--chaos 2.5` is not a whole number: use 0–100."),
        ("cat --stylize 1001", "`--stylize 1001` is out of range: use 0–1000."),
        ("cat --s -1", "`--s -1` is out of range: use 0–1000."),
        ("cat --seed 4294967296", "`--seed 4294967296` is out of range: use 0–4294967295."),
        ("cat --seed -1", "`--seed -1` is out of range: use 0–4294967295."),
        ("cat --seed abc", "`--seed abc` is not a whole number: use 0–4294967295."),
        ("cat --stop 9", "`--stop 9` is out of range: use 10–100."),
        ("cat --stop 101", "`--stop 101` is out of range: use 10–100."),
        ("cat --repeat 0", "`--repeat 0` is out of range: use 1–40."),
        ("cat --r 41", "`--r 41` is out of range: use 1–40."),
        ("cat --q 3", "`--q 3` is not a quality: use .25, .5, 1 or 2."),
        ("cat --q .3", "`--q .3` is not a quality: use .25, .5, 1 or 2."),
        ("cat --q high", "`--q high` is not a quality: use .25, .5, 1 or 2."),
        ("cat --ar 5:1", "`--ar 5:1` is out of range: use a ratio from 1:4 to 4:1."),
        ("cat --ar 1:5", "`--ar 1:5` is out of range: use a ratio from 1:4 to 4:1."),
        ("cat --ar 1.5:1", "`--ar 1.5:1` needs whole numbers: use `3:2`."),
        ("cat --ar 2.35:1", "`--ar 2.35:1` needs whole numbers: use `47:20`."),
        ("cat --ar 0:1", "`--ar 0:1` is not an aspect ratio: use whole numbers like `3:2`."),
        ("cat --ar 16x9", "`--ar 16x9` is not an aspect ratio: use whole numbers like `3:2`."),
        ("cat --ar -3:2", "`--ar -3:2` is not an aspect ratio: use whole numbers like `3:2`."),
        (
            "cat --ar 99999999999999999999999:1",
            "`--ar 99999999999999999999999:1` is out of range: use a ratio from 1:4 to 4:1.",
        ),
        ("cat --iw 3.5", "`--iw 3.5` is out of range: use 0–3, e.g. `--iw 0.5` or `--iw 2`."),
        ("cat --iw -1", "`--iw -1` is out of range: use 0–3, e.g. `--iw 0.5` or `--iw 2`."),
        ("cat --foo", "Unknown parameter `--foo`."),
        (
            "cat --v 6",
            "`--v` isn't a parameter here: pick one of this server's models with `--model NAME` (`/help` lists them),"
            " or an admin can define it with `/config set aliases`.",
        ),
        ("cat --vv 6", "Unknown parameter `--vv`."),
        ("cat --ar", "`--ar` needs a value, e.g. `--ar 3:2`."),
        ("cat --seed --tile", "`--seed` needs a value, e.g. `--seed 42`."),
        ("cat --no", "`--no` needs a value, e.g. `--no text, people`."),
        ("cat --no , , --tile", "`--no` needs a value, e.g. `--no text, people`."),
        ("cat --model", "`--model` needs a value, e.g. `--model NAME`."),
        ("cat --seed 7 8", "Unexpected `8` after `--seed 7`: put the description before the parameters."),
        ("cat --tile on a mat", "Unexpected `on` after `--tile`: put the description before the parameters."),
        ("cat --ar 3:2 sitting", "Unexpected `sitting` after `--ar 3:2`: put the description before the parameters."),
        ("cat --seed 1 --seed 2", "`--seed` is given twice: keep one."),
        ("cat --c 1 --chaos 2", "`--c` and `--chaos` are the same parameter: keep one."),
        ("cat --ar 3:2 —aspect 1:1", "`--ar` and `--aspect` are the same parameter: keep one."),
        ("cat --tile --TILE", "`--tile` is given twice: keep one."),
        ("cat --no a --no b", "`--no` is given twice: keep one."),
        ("", "Describe what to draw first."),
        ("   \n ", "Describe what to draw first."),
        ("--ar 3:2 --seed 1", "Describe what to draw first."),
        ("{cat, } --tile", "Describe what to draw first."),
    ],
)
def test_bad_parameter_is_explained(prompt: str, message: str) -> None:
    assert error(prompt) == message


def test_values_shown_in_errors_are_short_and_cannot_break_the_code_span() -> None:
    got = error("cat --seed `" + "x" * 300)
    assert got.startswith("`--seed 'xxx")
    assert got.count("`") == 2 and "…" in got


def test_dash_inside_text_is_text() -> None:
    assert one("cat — dog –5 well-known a--b --").text == "cat — dog –5 well-known a--b --"


def test_double_colon_is_plain_text() -> None:
    assert one("hot dog::2 bun --ar 3:2").text == "hot dog::2 bun"


# --- models ---------------------------------------------------------------------------------------


def test_model_is_matched_case_insensitively_and_named_as_the_server_does() -> None:
    assert one("cat --model SDXL", models=["sd15", "sdxl"]).model == "sdxl"


def test_unknown_model_lists_the_models() -> None:
    assert error("cat --model foo", models=["sd15", "sdxl"]) == "Unknown model `foo`: use one of `sd15`, `sdxl`."
    assert error("cat --model foo", models=["sd15"]) == "Unknown model `foo`: use `sd15`."


def test_long_model_list_is_cut_to_one_line() -> None:
    got = error("cat --model foo", models=[f"model-number-{i}" for i in range(100)])
    assert got.startswith("Unknown model `foo`: use one of `model-number-0`, ") and "more)" in got


def test_missing_model_value_suggests_a_real_model() -> None:
    assert error("cat --model", models=["sdxl"]) == "`--model` needs a value, e.g. `--model sdxl`."


# --- permutations and --repeat --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "texts"),
    [
        ("{red, green} bird", ["red bird", "green bird"]),
        ("a {red, green} {bird, fish}", ["a red bird", "a red fish", "a green bird", "a green fish"]),
        ("a {big {red, blue}, small} bird", ["a big red bird", "a big blue bird", "a small bird"]),
        ("a {red\\, green, blue} bird", ["a red, green bird", "a blue bird"]),
        ("a \\{curly\\} bird", ["a {curly} bird"]),
        ("a {cat} here", ["a cat here"]),
        ("red, green bird", ["red, green bird"]),  # commas outside braces are text
        ("a bird{, --tile}", ["a bird", "a bird"]),
    ],
)
def test_choices_make_one_job_each(prompt: str, texts: list[str]) -> None:
    assert [job.text for job in parse_prompt(prompt)] == texts


def test_choices_can_hold_parameter_values_and_parameters() -> None:
    assert [job.aspect for job in parse_prompt("cat --ar {1:1, 3:2}")] == [(1, 1), (3, 2)]
    assert [job.tile for job in parse_prompt("cat {--tile, --chaos 5}")] == [True, False]


@pytest.mark.parametrize("prompt", ["{red, green bird", "red} bird", "{a, {b, c}", "a }{ b"])
def test_unbalanced_braces_are_refused(prompt: str) -> None:
    assert error(prompt).startswith("Unbalanced braces: a `")


def test_too_deep_braces_are_refused() -> None:
    assert error("{" * 20 + "a" + "}" * 20) == "Braces are nested too deeply: use at most 8 levels."


def test_repeat_copies_the_job() -> None:
    jobs = parse_prompt("cat --r 3 --seed 5")
    assert len(jobs) == 3 and len(set(jobs)) == 1
    assert [job.repeat for job in jobs] == [3, 3, 3]  # so a server that turned --repeat off can tell
    assert [job.repeat for job in parse_prompt("{a, b} cat")] == [1, 1]
    assert "--r" not in jobs[0].raw  # rerolling one of them makes one job


def test_repeat_multiplies_with_choices() -> None:
    assert len(parse_prompt("{a, b} cat --repeat {2, 3}")) == 2 + 3 + 2 + 3
    assert len(parse_prompt("{a, b} cat --repeat 20")) == 40


@pytest.mark.parametrize(
    ("prompt", "max_jobs", "message"),
    [
        ("{a,b}{c,d}{e,f}{g,h}{i,j}{k,l} cat", 40, "This prompt makes 64 jobs: the limit is 40."),
        ("{a, b, c} cat --r 14", 40, "This prompt makes 42 jobs: the limit is 40."),
        ("cat --r 5", 4, "This prompt makes 5 jobs: the limit is 4."),
        ("{a,b}" * 100 + " cat", 40, "This prompt makes over a million jobs: the limit is 40."),
    ],
)
def test_too_many_jobs_names_the_count_and_the_cap(prompt: str, max_jobs: int, message: str) -> None:
    assert error(prompt, max_jobs=max_jobs).startswith(message)


def test_the_cap_itself_is_allowed() -> None:
    assert len(parse_prompt("{a, b} cat --r 20", max_jobs=40)) == 40


# --- /prefer suffix and /prefer option ------------------------------------------------------------


def test_suffix_applies_when_the_prompt_is_silent() -> None:
    job = one("cat --seed 1", suffix="--ar 16:9 --chaos 10")
    assert (job.aspect, job.chaos, job.seed) == ((16, 9), 10, 1)
    assert job.raw == "cat --seed 1 --ar 16:9 --chaos 10"


def test_prompt_wins_over_suffix_without_a_duplicate_error() -> None:
    job = one("cat --aspect 3:2", suffix="--ar 16:9 --s 50")
    assert (job.aspect, job.stylize) == ((3, 2), 50)
    assert job.raw == "cat --aspect 3:2 --s 50"


def test_suffix_text_joins_the_description() -> None:
    assert one("cat --tile", suffix="in watercolor --s 50").text == "cat in watercolor"


def test_overridden_suffix_parameter_is_not_checked() -> None:
    assert one("cat --model sdxl", suffix="--model gone", models=["sdxl"]).model == "sdxl"


def test_suffix_errors_say_they_come_from_the_suffix() -> None:
    assert error("cat", suffix="--chaos 500") == "`--chaos 500` is out of range: use 0–100 (from your /prefer suffix)."
    assert error("cat", suffix="--ar 1:1 --ar 2:1") == "`--ar` is given twice: keep one (from your /prefer suffix)."
    assert error("cat", suffix="{a, b") == (
        "Unbalanced braces: a `{` has no matching `}` (write `\\{` for a brace) (from your /prefer suffix)."
    )


def test_thousands_of_digits_are_out_of_range_not_a_crash() -> None:
    # int() refuses strings over 4,300 digits; the suffix is not held to the prompt's length limit
    message = f"`--seed {'9' * 39}…` is out of range: use 0–4294967295 (from your /prefer suffix)."
    assert error("cat", suffix="--seed " + "9" * 5000) == message
    assert error("cat", suffix="--ar 1:" + "9" * 5000).startswith("`--ar 1:999")


def test_suffix_choices_multiply() -> None:
    assert [job.aspect for job in parse_prompt("cat", suffix="--ar {1:1, 2:1}")] == [(1, 1), (2, 1)]


OPTIONS = {"mine": "--ar 3:2 --chaos 20", "again": "--mine", "Style": "--s 750"}


def test_option_expands() -> None:
    job = one("cat --mine --seed 3", options=OPTIONS)
    assert (job.aspect, job.chaos, job.seed) == ((3, 2), 20, 3)
    assert job.raw == "cat --ar 3:2 --chaos 20 --seed 3"


def test_option_names_are_case_insensitive() -> None:
    assert one("cat --STYLE", options=OPTIONS).stylize == 750
    assert one("cat —style", options=OPTIONS).stylize == 750


def test_option_in_suffix_expands() -> None:
    assert one("cat", suffix="--mine", options=OPTIONS).chaos == 20


def test_option_expansion_is_not_recursive() -> None:
    assert error("cat --again", options=OPTIONS) == "Unknown parameter `--mine` (from `--again`)."


def test_unknown_option_is_an_unknown_parameter() -> None:
    assert error("cat --theirs", options=OPTIONS) == "Unknown parameter `--theirs`."


def test_option_cannot_shadow_a_parameter() -> None:
    assert one("cat --ar 1:1", options={"ar": "--chaos 5"}).aspect == (1, 1)


def test_option_clashing_with_the_prompt_is_a_duplicate() -> None:
    assert error("cat --chaos 1 --mine", options=OPTIONS) == "`--chaos` is given twice: keep one (from `--mine`)."


def test_prompt_beats_a_suffix_option() -> None:
    assert one("cat --ar 1:1", suffix="--mine", options=OPTIONS).aspect == (1, 1)


# --- length ----------------------------------------------------------------------------------------


def test_prompt_at_the_limit_is_accepted_and_one_over_is_not() -> None:
    assert one("a" * MAX_PROMPT_CHARS).text == "a" * MAX_PROMPT_CHARS
    assert error("a" * (MAX_PROMPT_CHARS + 1)) == "Your prompt is 1,501 characters long: the limit is 1,500."


def test_suffix_that_makes_the_prompt_too_long_is_refused() -> None:
    got = error("a" * 1400, suffix="b" * 200)
    assert got == "This prompt is 1,601 characters long once expanded: the limit is 1,500."


# --- writing prompts back out ----------------------------------------------------------------------

ROUND_TRIPS = [
    "cat",
    "a dream of a distant galaxy --ar 3:2 --seed 7 --no text",
    "cat —aspect 1920:1080 --c 5 --s 0 --q .25 --stop 10 --tile --model sd15 --no a,b, c",
    "cat --Q 2 --seed 4294967295 --stylize 1000",
    "a \\{curly\\} bird, with a \\\\\\{ backslash --no \\}",
    "C:\\pics\\cat.png a cat --no dogs\\",
]


@pytest.mark.parametrize("prompt", ROUND_TRIPS)
def test_to_text_parses_back_to_the_same_job(prompt: str) -> None:
    job = one(prompt)
    again = one(job.to_text())
    assert dataclasses.replace(again, raw=job.raw) == job
    assert again.to_text() == job.to_text()


@pytest.mark.parametrize("prompt", ROUND_TRIPS)
def test_raw_parses_back_to_exactly_the_same_job(prompt: str) -> None:
    job = one(prompt)
    assert parse_prompt(job.raw) == [job]


def test_to_text_is_canonical() -> None:
    job = one("cat --no a,b --tile —q 0.5 --c 5 --aspect 6:4 --model x --stop 50 --s 20 --seed 1")
    assert (
        job.to_text()
        == "cat --ar 3:2 --seed 1 --chaos 5 --stylize 20 --quality .5 --stop 50 --tile --model x --no a, b"
    )


def test_raw_keeps_the_members_spelling_with_plain_dashes() -> None:
    assert one("cat —C 5 --Aspect 3:2").raw == "cat --c 5 --aspect 3:2"


def test_raw_with_suffix_and_options_reparses_alone() -> None:
    jobs = parse_prompt("{red, blue} cat --mine", suffix="in oils --s 50", options=OPTIONS)
    for job in jobs:
        assert parse_prompt(job.raw) == [job]


def test_module_docstring_documents_every_spelling() -> None:
    """The table is copied into docs/parameters.md: it must list every name the parser accepts."""
    import bot.prompt

    for name in bot.prompt._ALIASES:
        assert f"`--{name}" in bot.prompt.__doc__, name


@pytest.mark.parametrize("dashes", ["−−", "‐‐", "－－", "―"])
def test_minus_signs_and_hyphens_from_phones_start_a_parameter(dashes):
    (job,) = parse_prompt(f"a fox {dashes}ar 3:2")
    assert (job.text, job.aspect) == ("a fox", (3, 2))


def test_a_lone_surrogate_is_a_prompt_error_not_a_crash():
    with pytest.raises(PromptError, match="broken character"):
        parse_prompt("a cat \ud83d in a hat")
    with pytest.raises(PromptError, match=r"broken character .* \(from your /prefer suffix\)"):
        parse_prompt("a cat", suffix="--no \udc00")


@pytest.mark.parametrize("name", sorted(bot.prompt.ELSEWHERE))
def test_midjourneys_parameters_we_dont_do_say_what_does_their_job_here(name):
    with pytest.raises(PromptError) as refused:
        parse_prompt(f"a fox --{name} 1")
    message = str(refused.value)
    assert message == f"`--{name}` isn't a parameter here: {bot.prompt.ELSEWHERE[name]}"
    assert ("/config set aliases" in message) == (name in bot.prompt.ALIASABLE)  # a server may define these
    assert not message.endswith("…"), "fits the one-line limit"
    assert name not in PARAMETER_NAMES  # and none of them shadows one we do


# --- `::` multi-prompts ---------------------------------------------------------------------------


def test_multi_prompt_weights_stay_in_the_description_and_run_again_as_typed():
    job = one("hot:: dog::-0.5 --seed 3")
    assert job.text == "hot:: dog::-0.5" and job.seed == 3
    assert parse_prompt(job.raw) == [job] and parse_prompt(job.to_text()) == [job]


@pytest.mark.parametrize(
    ("prompt", "said"),
    [("hot::1 dog::-1", "add up to 0"), ("::3 a cat", "weighs nothing"), ("cat::11 dog", "out of range")],
)
def test_bad_multi_prompt_weights_are_refused_in_one_line(prompt, said):
    assert said in error(prompt)


# --- the server's aliases: `--v 7`, `--niji`, `--raw`… ---------------------------------------------

ALIASES = {"v 7": "--model big", "v 6": "--model tiny", "niji": "--model big --stylize 250", "raw": "--stylize 0"}


def test_a_servers_aliases_are_written_out_so_replays_do_not_depend_on_them():
    job = one("a fox --v 7 --raw --seed 2", aliases=ALIASES, models=["tiny", "big"])
    assert (job.model, job.stylize, job.seed) == ("big", 0, 2)
    assert "--v" not in job.raw and parse_prompt(job.raw, models=["tiny", "big"]) == [job]
    assert one("a fox --version 6", aliases=ALIASES, models=["tiny", "big"]).model == "tiny"
    niji = one("a fox —niji", aliases=ALIASES, models=["tiny", "big"])
    assert (niji.model, niji.stylize) == ("big", 250)


def test_an_alias_the_server_has_not_defined_is_refused_with_a_pointer():
    assert error("a fox --v 5", aliases=ALIASES) == "`--v 5` isn't defined on this server: use `--v 7` or `--v 6`."
    assert error("a fox --v", aliases=ALIASES) == "`--v` needs a value on this server: `--v 7` or `--v 6`."
    assert "/config set aliases" in error("a fox --weird 500", aliases=ALIASES)
    assert "/config set aliases" in error("a fox --hd")


def test_an_alias_counts_as_the_parameters_it_means():
    assert "same parameter" in error("a fox --raw --s 100", aliases=ALIASES)
    assert "(from `--raw`, this server's alias)" in error("a fox --raw", aliases={"raw": "--stylize 5000"})


def test_loras_come_from_lora_and_from_a1111_tags_each_once():
    (job,) = parse_prompt("a fox <lora:ink:0.8> in snow --lora Paper --ar 3:2 --lora grain:1.5")
    assert job.text == "a fox in snow"
    assert job.loras == (("ink", 0.8), ("Paper", 1.0), ("grain", 1.5))
    assert job.raw == "a fox in snow --ar 3:2 --lora ink:0.8 --lora Paper --lora grain:1.5"
    assert parse_prompt(job.raw)[0] == job  # the recorded prompt parses back to the same job
    assert parse_prompt(job.to_text())[0].loras == job.loras
    (suffixed,) = parse_prompt("a fox --lora ink:0.5", suffix="--lora ink --lora paper")
    assert suffixed.loras == (("ink", 0.5), ("paper", 1.0))  # the prompt's weight wins over the suffix's


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ("a fox --lora ink:3", "`--lora ink:3`: a LoRA's weight is 0–2, e.g. `ink:0.8`."),
        ("a fox <lora:ink:-1>", "`--lora ink:-1`: a LoRA's weight is 0–2, e.g. `ink:0.8`."),
        ("a fox --lora ink --lora INK:0.5", "The LoRA `INK` is given twice: keep one."),
        ("a fox --lora", "`--lora` needs a value, e.g. `--lora NAME:0.8`."),
        ("a fox --lora a/b", "`--lora a/b` is not a LoRA name: use letters, digits, `-`, `_` or `.`, e.g. `ink:0.8`."),
        ("a fox --lora a --lora b --lora c --lora d --lora e", "This prompt names 5 LoRAs: the most is 4."),
    ],
)
def test_a_bad_lora_is_one_sentence(prompt, message):
    with pytest.raises(PromptError) as caught:
        parse_prompt(prompt)
    assert str(caught.value) == message
