"""Banned words and patterns: linear-time matching, and text folded so look-alikes can't evade a rule."""

from __future__ import annotations

import time

import pytest

from bot.moderation import BannedRules, PatternRefused, compile_rule, normalise


@pytest.mark.parametrize(
    "evasion",
    [
        "g\u200bore",  # zero-width space
        "go\u00adre",  # soft hyphen
        "g\u2060o\u200dre",  # word joiner, zero-width joiner
        "gоre",  # Cyrillic о
        "GОRЕ",  # Cyrillic capitals
        "ｇｏｒｅ",  # fullwidth letters
        "gοre",  # Greek omicron
    ],
)
def test_banned_words_see_through_invisible_characters_and_look_alikes(evasion):
    rules = BannedRules.compile(["gore"])
    assert rules.match(f"a {evasion} scene") == "gore"
    assert rules.match("a goretex jacket") is None


def test_patterns_match_normalised_text_in_any_case():
    rules = BannedRules.compile(["/bl[o0]+d/"])
    assert rules.match("ＢＬ0０ＤＹ moon") == "/bl[o0]+d/"
    assert normalise("Ａ\u00adb") == "ab"


def test_a_catastrophic_pattern_runs_in_linear_time():
    rules = BannedRules.compile(["/(x+x+)+y/"])
    started = time.perf_counter()
    assert rules.match("x" * 1500) is None  # Python's re: longer than the age of the universe
    assert time.perf_counter() - started < 0.1


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("/(a)\\1/", "back-references and look-arounds can't be matched in linear time"),
        ("/(?<!x)y/", "back-references and look-arounds"),
        ("/./", "it would refuse almost every prompt (it matches a blank prompt)"),
        ("/x*/", "it would refuse almost every prompt"),
        ("/^a/", "it matches `a`"),
        ("/(unclosed/", "missing )"),
    ],
)
def test_patterns_that_cant_run_safely_or_ban_everything_are_refused_with_a_reason(pattern, reason):
    with pytest.raises(PatternRefused, match=reason.replace("(", r"\(").replace(")", r"\)")):
        compile_rule(pattern)


def test_a_stored_pattern_the_engine_refuses_is_skipped_not_fatal():
    rules = BannedRules.compile(["/(a)\\1/", "gore"])
    assert rules.match("aa gore") == "gore"
