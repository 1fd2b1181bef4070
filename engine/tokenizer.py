"""A CLIP tokenizer built in memory, so no model hub is ever needed.

The vocabulary is CLIP's byte-level alphabet (every string can be encoded) plus one
whole-word token for each word we expect in prompts. Words outside the list still
encode, one character per token.
"""

from __future__ import annotations

from collections.abc import Iterable

from transformers import CLIPTokenizer

MODEL_MAX_LENGTH = 77
SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>")


def _bytes_to_unicode() -> list[str]:
    """CLIP/GPT-2's printable stand-in for each of the 256 byte values."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = []
    extra = 0
    for b in range(256):
        if b in printable:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def build_vocab(words: Iterable[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Return (vocab, merges) for a BPE that keeps each of `words` as one token."""
    alphabet = _bytes_to_unicode()
    tokens: list[str] = alphabet + [c + "</w>" for c in alphabet]
    merges: list[tuple[str, str]] = []
    seen = set(tokens)
    for word in sorted({w.strip().lower() for w in words if w.strip()}):
        if any(ch.isspace() for ch in word):
            raise ValueError(f"vocabulary entries must be single words, got {word!r}")
        encoded = "".join(alphabet[b] for b in word.encode("utf-8"))
        # Merge left to right: "r e" -> "re", "re d</w>" -> "red</w>".
        current = encoded[0]
        for i, ch in enumerate(encoded[1:], start=1):
            right = ch + "</w>" if i == len(encoded) - 1 else ch
            merged = current + right
            rule = (current, right)
            if merged not in seen:
                merges.append(rule)
                tokens.append(merged)
                seen.add(merged)
            current = merged
    tokens.extend(SPECIAL_TOKENS)
    return {tok: i for i, tok in enumerate(tokens)}, merges


def build_tokenizer(words: Iterable[str]) -> CLIPTokenizer:
    vocab, merges = build_vocab(words)
    # transformers 5 ignores vocab_file=/merges_file= silently; pass the data itself.
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=MODEL_MAX_LENGTH)
