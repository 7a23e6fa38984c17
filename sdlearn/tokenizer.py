"""CLIP's byte-level BPE tokenizer, written from scratch: text -> 77 token ids.

Stable Diffusion v1 and v2 read a prompt through the tokenizer OpenAI trained for CLIP
(Radford et al. 2021, sec. 2.4 and Sennrich et al. 2016 for byte-pair encoding): 49,408 tokens =
256 single bytes, the same 256 bytes ending a word (``</w>``), 48,894 learned merges and the two
special tokens ``<|startoftext|>`` (49406) and ``<|endoftext|>`` (49407). Turning a prompt into ids:

1. clean up: Unicode NFC, lower case (whitespace only separates words);
2. pre-tokenise: split into words, single digits and runs of punctuation (the regex
   ``'s|'t|'re|'ve|'m|'ll|'d|\\p{L}+|\\p{N}|[^\\s\\p{L}\\p{N}]+`` of CLIP, written out by hand);
3. map every UTF-8 byte of a word to a printable character (``bytes_to_unicode``), mark the last
   one with ``</w>``, then apply the learned merges lowest rank first until none applies;
4. look the pieces up in the vocabulary, add start/end ids, pad with the end id to 77 (SD v1).

The clean-up follows transformers 5's ``CLIPTokenizer`` (the ``tokenizers``-backed one, the only
one it ships): NFC + lower case, no ``ftfy`` and no HTML unescaping (OpenAI's original also runs
``ftfy.fix_text`` and ``html.unescape``; for ordinary prompts the ids are the same).
"""
from __future__ import annotations

import gzip
import json
import unicodedata
import warnings
from pathlib import Path

import torch

VOCAB_PATH = Path(__file__).resolve().parent / "assets" / "bpe_simple_vocab_16e6.txt.gz"
START_TOKEN, END_TOKEN = "<|startoftext|>", "<|endoftext|>"
N_MERGES = 49152 - 256 - 2          # 48,894 merges: with 2 x 256 byte tokens and 2 specials, 49,408 ids
MAX_LENGTH = 77                     # CLIP's context length: Stable Diffusion always feeds 77 tokens
CONTRACTIONS = ("'s", "'t", "'re", "'ve", "'m", "'ll", "'d")
# Unicode White_Space (what \s means in the Oniguruma regexes of CLIP's reference tokenizer); note
# that Python's str.isspace() also counts the separators U+001C..U+001F, which CLIP does not.
WHITESPACE = frozenset("\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
                       "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")


def bytes_to_unicode() -> dict[int, str]:
    """A reversible map byte -> printable character, so that BPE can work on strings of any text.

    Printable Latin-1 bytes map to themselves; the 68 others (control bytes, space, ...) map to
    U+0100 onwards in order. E.g. the space byte 0x20 becomes 'Ġ' and 0xF0 (start of an emoji) 'ð'.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    # Order matters: it fixes the ids of the 256 byte tokens (printable bytes first, "a" is id 64).
    return {**{b: chr(b) for b in printable}, **{b: chr(256 + n) for n, b in enumerate(others)}}


def load_merges(path: str | Path = VOCAB_PATH) -> list[tuple[str, str]]:
    """The learned merges, best (most frequent in CLIP's training text) first."""
    with gzip.open(path, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    return [tuple(line.split()) for line in lines[1:N_MERGES + 1]]  # line 0 is a version header


def build_vocab(merges: list[tuple[str, str]]) -> dict[str, int]:
    """Token -> id: the 256 bytes, the 256 word-final bytes, one token per merge, the 2 specials."""
    byte_chars = list(bytes_to_unicode().values())
    tokens = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m) for m in merges]
    tokens += [START_TOKEN, END_TOKEN]
    return {t: i for i, t in enumerate(tokens)}


def _kind(c: str) -> str:
    """'space', 'letter' (Unicode category L*), 'number' (N*) or 'other' for one character."""
    if c in WHITESPACE:
        return "space"
    cat = unicodedata.category(c)[0]
    return {"L": "letter", "N": "number"}.get(cat, "other")


def pre_tokenize(text: str) -> list[str]:
    """Split cleaned text into the chunks BPE works on, the way CLIP's regex does.

    At each position the first rule that matches wins: a contraction ('s 't 're 've 'm 'll 'd),
    a run of letters, a single digit (so "2024" becomes 4 chunks), a run of other non-space
    characters (punctuation, emoji). Whitespace only separates chunks.
    """
    chunks, i = [], 0
    while i < len(text):
        kind = _kind(text[i])
        if kind == "space":
            i += 1
            continue
        contraction = next((c for c in CONTRACTIONS if text.startswith(c, i)), None)
        if contraction is not None:
            j = i + len(contraction)
        elif kind == "number":
            j = i + 1
        else:  # a run of letters, or a run of "other" characters
            j = i + 1
            while j < len(text) and _kind(text[j]) == kind:
                j += 1
        chunks.append(text[i:j])
        i = j
    return chunks


def clean(text: str) -> str:
    """Unicode NFC, then lower case ("Café" and "CAFÉ" both become "café").

    Lower case character by character, as CLIP's reference does: Python's ``str.lower()`` would
    turn a word-final capital sigma into 'ς', the per-character rule always gives 'σ'.
    """
    return "".join(c.lower() for c in unicodedata.normalize("NFC", text))


class CLIPTokenizer:
    """CLIP's tokenizer with the real vocabulary (ids identical to transformers' ``CLIPTokenizer``).

    >>> tok = CLIPTokenizer()
    >>> tok.encode("a photo of a cat")
    [49406, 320, 1125, 539, 320, 2368, 49407]
    >>> tok(["a photo of a cat"]).shape
    torch.Size([1, 77])
    """

    model_max_length = MAX_LENGTH

    def __init__(self, vocab_path: str | Path = VOCAB_PATH):
        self.merges = load_merges(vocab_path)
        self.ranks = {pair: rank for rank, pair in enumerate(self.merges)}
        self.encoder = build_vocab(self.merges)                   # token -> id
        self.decoder = {i: t for t, i in self.encoder.items()}    # id -> token
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {c: b for b, c in self.byte_encoder.items()}
        self.start_id, self.end_id = self.encoder[START_TOKEN], self.encoder[END_TOKEN]
        self.pad_id = self.end_id                                 # Stable Diffusion v1 pads with <|endoftext|>
        self._cache: dict[str, list[str]] = {}

    @property
    def vocab_size(self) -> int:
        return len(self.encoder)

    def bpe_steps(self, chunk: str) -> list[list[str]]:
        """Every state of BPE on one pre-tokenised chunk: its bytes, then one list per merge applied.

        Each step merges the adjacent pair with the lowest rank (the merge learned earliest),
        everywhere it occurs left to right; it stops when no adjacent pair is a known merge.
        """
        symbols = [self.byte_encoder[b] for b in chunk.encode("utf-8")]
        symbols[-1] += "</w>"                                     # the end of a word is part of its last symbol
        steps = [symbols]
        while len(symbols) > 1:
            pairs = set(zip(symbols, symbols[1:]))
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    merged.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
            steps.append(symbols)
        return steps

    def bpe(self, chunk: str) -> list[str]:
        """The BPE pieces of one chunk (cached: prompts repeat words)."""
        if chunk not in self._cache:
            self._cache[chunk] = self.bpe_steps(chunk)[-1]
        return self._cache[chunk]

    def tokenize(self, text: str) -> list[str]:
        """Text -> BPE pieces (no start/end), e.g. "a photo" -> ['a</w>', 'photo</w>']."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        pieces = []
        for part in _split_specials(text):
            if part in (START_TOKEN, END_TOKEN):
                pieces.append(part)
            else:
                for chunk in pre_tokenize(clean(part)):
                    pieces.extend(self.bpe(chunk))
        return pieces

    def encode(self, text: str) -> list[int]:
        """Text -> ids with the start and end ids, untruncated."""
        return [self.start_id] + [self.encoder[p] for p in self.tokenize(text)] + [self.end_id]

    def decode(self, ids: list[int] | torch.Tensor, skip_special_tokens: bool = True) -> str:
        """Ids -> text (lower case and with CLIP's spacing: "a cat!" decodes to "a cat !")."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        special = {self.start_id, self.end_id}
        tokens = [self.decoder[int(i)] for i in ids if not (skip_special_tokens and int(i) in special)]
        # Rebuild the text token by token: specials stay as they are, "</w>" becomes a space.
        out, buffer = [], bytearray()
        for token in tokens:
            if token in (START_TOKEN, END_TOKEN):
                out.append(buffer.decode("utf-8", errors="replace") + token)
                buffer = bytearray()
                continue
            word_end = token.endswith("</w>")
            buffer.extend(self.byte_decoder[c] for c in (token[:-4] if word_end else token))
            if word_end:
                buffer.extend(b" ")
        out.append(buffer.decode("utf-8", errors="replace"))
        return "".join(out).strip()

    def __call__(self, prompts: str | list[str], max_length: int = MAX_LENGTH) -> torch.Tensor:
        """Prompts -> LongTensor (B, max_length) as Stable Diffusion v1 feeds its text encoder.

        Each row is ``<start> tokens... <end>`` padded with the end id. A prompt longer than
        ``max_length`` tokens keeps its first ``max_length - 2`` tokens and its end id, with a
        warning that names the dropped text (as diffusers does).
        """
        if isinstance(prompts, str):
            prompts = [prompts]
        if not isinstance(prompts, (list, tuple)):
            raise TypeError(f"prompts must be a str or a list of str, got {type(prompts).__name__}")
        for p in prompts:
            if not isinstance(p, str):
                raise TypeError(f"prompts must be a str or a list of str, got an element of type {type(p).__name__}")
        if not isinstance(max_length, int) or max_length < 2:
            raise ValueError(f"max_length must be an int >= 2 (room for the start and end ids), got {max_length!r}")
        rows = []
        for prompt in prompts:
            ids = self.encode(prompt)
            if len(ids) > max_length:
                dropped = self.decode(ids[max_length - 1:-1])
                warnings.warn(f"The following part of your input was truncated because CLIP can only handle "
                              f"sequences up to {max_length} tokens: {dropped!r}", stacklevel=2)
                ids = ids[:max_length - 1] + [self.end_id]
            rows.append(ids + [self.pad_id] * (max_length - len(ids)))
        return torch.tensor(rows, dtype=torch.long)  # (B, max_length)

    def save_pretrained(self, folder: str | Path) -> None:
        """Write vocab.json, merges.txt and configs that transformers' CLIPTokenizer (and diffusers) load."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "vocab.json").write_text(json.dumps(self.encoder, ensure_ascii=False), encoding="utf-8")
        merges = "#version: 0.2\n" + "\n".join(" ".join(m) for m in self.merges) + "\n"
        (folder / "merges.txt").write_text(merges, encoding="utf-8")
        specials = {"bos_token": START_TOKEN, "eos_token": END_TOKEN, "pad_token": END_TOKEN, "unk_token": END_TOKEN}
        (folder / "special_tokens_map.json").write_text(json.dumps(specials, indent=2) + "\n")
        config = {"tokenizer_class": "CLIPTokenizer", "model_max_length": MAX_LENGTH, "do_lower_case": True,
                  "clean_up_tokenization_spaces": False, **specials}
        (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")


def _split_specials(text: str) -> list[str]:
    """Split raw text around literal <|startoftext|> / <|endoftext|>, which map straight to their ids."""
    parts, i = [], 0
    while True:
        hits = [(text.find(s, i), s) for s in (START_TOKEN, END_TOKEN)]
        hits = [(pos, s) for pos, s in hits if pos >= 0]
        if not hits:
            parts.append(text[i:])
            return [p for p in parts if p]
        pos, s = min(hits)
        parts += [text[i:pos], s]
        i = pos + len(s)
