"""Tokenizers built in memory, so no model hub is ever needed: CLIP's own (`clip_tokenizer`, from the
merges the project ships, for single-file SD 1.x/SDXL checkpoints) and small ones for the tiny models.

A tiny vocabulary is CLIP's byte-level alphabet (every string can be encoded) plus one
whole-word token for each word we expect in prompts. Words outside the list still
encode, one character per token.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from transformers import CLIPTokenizer, PreTrainedTokenizerFast

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


def _bpe(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Apply merges the way CLIP's BPE does: always the lowest-ranked pair present first."""
    while len(symbols) > 1:
        pairs = [(ranks.get(pair, len(ranks)), i) for i, pair in enumerate(zip(symbols, symbols[1:], strict=False))]
        rank, i = min(pairs)
        if rank == len(ranks):
            break
        first, second = symbols[i], symbols[i + 1]
        merged: list[str] = []
        j = 0
        while j < len(symbols):
            if j < len(symbols) - 1 and symbols[j] == first and symbols[j + 1] == second:
                merged.append(first + second)
                j += 2
            else:
                merged.append(symbols[j])
                j += 1
        symbols = merged
    return symbols


def build_vocab(words: Iterable[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Return (vocab, merges) for a BPE that keeps each of `words` as one token."""
    alphabet = _bytes_to_unicode()
    tokens: list[str] = alphabet + [c + "</w>" for c in alphabet]
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    seen = set(tokens)
    words = sorted({w.strip().lower() for w in words if w.strip()})
    for word in words:
        if any(ch.isspace() for ch in word):
            raise ValueError(f"vocabulary entries must be single words, got {word!r}")
    # A merge learnt for one word ("r i" from "right") can fire first inside another
    # ("triangle" -> t ri a ...), so join whatever pieces BPE leaves, until every word is whole.
    changed = True
    while changed:
        changed = False
        for word in words:
            encoded = "".join(alphabet[b] for b in word.encode("utf-8"))
            pieces = _bpe([*encoded[:-1], encoded[-1] + "</w>"], ranks)
            current = pieces[0]
            for right in pieces[1:]:
                rule = (current, right)
                if rule not in ranks:
                    ranks[rule] = len(merges)
                    merges.append(rule)
                    changed = True
                merged = current + right
                if merged not in seen:
                    tokens.append(merged)
                    seen.add(merged)
                current = merged
    tokens.extend(SPECIAL_TOKENS)
    return {tok: i for i, tok in enumerate(tokens)}, merges


def build_tokenizer(words: Iterable[str]) -> CLIPTokenizer:
    vocab, merges = build_vocab(words)
    # transformers 5 ignores vocab_file=/merges_file= silently; pass the data itself.
    # merges go on to tokenizers' BPE, which takes (a, b) pairs; transformers annotates them list[str].
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=MODEL_MAX_LENGTH)  # type: ignore[arg-type]


CLIP_MERGES = Path(__file__).parent / "configs" / "clip" / "merges.txt"
CLIP_MERGE_COUNT = 48894  # the merges CLIP's tokenizer uses (49408 tokens - 2 * 256 byte symbols - 2 special)


def clip_tokenizer(pad_token: str = "<|endoftext|>") -> CLIPTokenizer:
    """OpenAI CLIP's tokenizer (SD 1.x's and both of SDXL's), from the merges the project ships.

    The vocabulary is rebuilt as CLIP's own tokenizer builds it: the byte symbols (printable ones
    first), each again with `</w>`, one token per merge in order, then the two special tokens.
    SDXL's second tokenizer pads with "!" (`pad_token="!"`), the first and SD 1.x's with `<|endoftext|>`.
    """
    lines = CLIP_MERGES.read_text(encoding="utf-8").splitlines()[1 : 1 + CLIP_MERGE_COUNT]
    merges = [tuple(line.split()) for line in lines]
    # CLIP numbers the printable bytes' symbols first, then the stand-ins for the other bytes
    symbols = _bytes_to_unicode()
    alphabet = [c for b, c in enumerate(symbols) if ord(c) == b] + [c for b, c in enumerate(symbols) if ord(c) != b]
    tokens = [*alphabet, *(c + "</w>" for c in alphabet), *("".join(m) for m in merges), *SPECIAL_TOKENS]
    vocab = {token: i for i, token in enumerate(tokens)}
    # merges go on to tokenizers' BPE, which takes (a, b) pairs; transformers annotates them list[str].
    return CLIPTokenizer(
        vocab=vocab,
        merges=merges,  # type: ignore[arg-type]
        pad_token=pad_token,
        model_max_length=MODEL_MAX_LENGTH,
    )


T5_MAX_LENGTH = 32  # a tiny model's T5 reads this many tokens; Flux and SD3 pad their T5 prompt to it
T5_SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>")


def build_t5_tokenizer(words: Iterable[str], model_max_length: int = T5_MAX_LENGTH) -> PreTrainedTokenizerFast:
    """A T5-style tokenizer (pad id 0, `</s>` after the text, no start token) from an in-memory vocabulary.

    Flux and SD3 read their T5 prompt through a second tokenizer with T5's conventions. A word-level
    vocabulary is enough for a tiny model: each listed word is one token, anything else `<unk>`.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    vocab = {token: i for i, token in enumerate(T5_SPECIAL_TOKENS)}
    for word in sorted({w.strip().lower() for w in words if w.strip()}):
        vocab.setdefault(word, len(vocab))
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", vocab["</s>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=model_max_length,
    )


# The prompt as it is: the text encoders of Flux.2 [klein] and Z-Image wrap it in a chat template.
PLAIN_CHAT_TEMPLATE = "{% for message in messages %}{{ message['content'] }}{% endfor %}"


def build_chat_tokenizer(words: Iterable[str], model_max_length: int = T5_MAX_LENGTH) -> PreTrainedTokenizerFast:
    """`build_t5_tokenizer` with a plain chat template, for pipelines that wrap the prompt in one."""
    tokenizer = build_t5_tokenizer(words, model_max_length)
    tokenizer.chat_template = PLAIN_CHAT_TEMPLATE
    return tokenizer


QWEN_SPECIAL_TOKENS: tuple[str, ...] = (
    *("<|endoftext|>", "<|im_start|>", "<|im_end|>"),
    *("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"),
)


def build_qwen_tokenizer(words: Iterable[str]) -> PreTrainedTokenizerFast:
    """A Qwen2-style tokenizer (chat markers as special tokens, `<|endoftext|>` padding, no end token)
    from an in-memory word-level vocabulary.

    Qwen-Image wraps each prompt in a system message and drops that prefix's first tokens by count
    (34 in Qwen2's vocabulary; 64 for Qwen-Image-Edit's longer one), so the prefix must tokenize to
    the same number of tokens here: newlines, English contractions ('s) and each run of punctuation
    marks ("),") are tokens of their own, as in Qwen2's byte-level BPE.
    """
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers

    vocab = {token: i for i, token in enumerate(("<unk>", *QWEN_SPECIAL_TOKENS))}
    marks = {"\n", ",", ":", ".", "'s", "),", "user", "assistant"}
    for word in sorted({w.strip().lower() for w in words if w.strip()} | marks):
        vocab.setdefault(word, len(vocab))
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Lowercase()
    # keep contractions, words, runs of punctuation and newlines (Qwen2's pre-tokenizer); drop other whitespace
    pattern = Regex(r"'(?:s|t|re|ve|m|ll|d)|\n|\w+|[^\w\s]+")
    tokenizer.pre_tokenizer = pre_tokenizers.Split(pattern, behavior="removed", invert=True)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<|endoftext|>",
        unk_token="<unk>",
        additional_special_tokens=list(QWEN_SPECIAL_TOKENS[1:]),
        model_max_length=T5_MAX_LENGTH * 4,
    )
