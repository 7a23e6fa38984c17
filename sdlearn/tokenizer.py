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

Speed: step 3 as ``bpe_steps`` writes it (find the best pair, merge it everywhere, repeat) rescans
the word after every merge, quadratic in its length: a 32,000-letter word took 17 s. ``bpe`` gives
the same pieces in O(n log n):

* the symbols of a word sit in a doubly linked list (``nxt``/``prev`` index lists): a merge is O(1);
* candidate pairs wait in one bucket per merge rank, and a heap of the ranks that have candidates
  hands out the lowest one: queueing and taking a rank is O(log n), so each merge is O(log n);
* a bucket is merged left to right, skipping entries whose pair changed since they were queued.
  That is exactly the textbook loop: a merge only creates pairs that hold the new token, and every
  merge builds on earlier ones (checked when the vocabulary loads), so a new pair always ranks after
  the current one; left to right, a run "a a a a" becomes "aa aa" as the textbook scan makes it;
* a long word first gets the textbook rounds vectorised with numpy while its best pair is frequent
  (a run of one letter or a repeated emoji: a few rounds do most of the merges). Each such round
  removes a fixed share of the symbols, so they cost O(n) in all;
* a thread-safe LRU cache keeps the ids of recent short words (prompts repeat words).

Clean-up and pre-tokenising are single passes (one kind letter per character, then a regex over
those letters), so a whole 100,000-character text tokenises in a fraction of a second.
"""
from __future__ import annotations

import functools
import gzip
import heapq
import json
import numbers
import operator
import re
import unicodedata
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from sdlearn import ASSETS_DIR

VOCAB_PATH = ASSETS_DIR / "bpe_simple_vocab_16e6.txt.gz"
START_TOKEN, END_TOKEN = "<|startoftext|>", "<|endoftext|>"
N_MERGES = 49152 - 256 - 2          # 48,894 merges: with 2 x 256 byte tokens and 2 specials, 49,408 ids
MAX_LENGTH = 77                     # CLIP's context length: Stable Diffusion always feeds 77 tokens
CONTRACTIONS = ("'s", "'t", "'re", "'ve", "'m", "'ll", "'d")
# Unicode White_Space (what \s means in the Oniguruma regexes of CLIP's reference tokenizer); note
# that Python's str.isspace() also counts the separators U+001C..U+001F, which CLIP does not.
WHITESPACE = frozenset("\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
                       "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")
LONG_WORD_BYTES = 256               # words this long first get numpy-vectorised textbook rounds
FREQUENT_PAIR = 1 / 128             # ... as long as the best pair makes up this share of the symbols
CACHE_SIZE = 10_000                 # words kept by the LRU cache
CACHE_MAX_CHARS = 100               # longer words are not cached (bounded memory)


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


@functools.lru_cache(maxsize=1 << 16)
def _kind(c: str) -> str:
    """One letter for one character: 'S' space, 'L' letter (Unicode category L*), 'N' number (N*), 'O' other."""
    if c in WHITESPACE:
        return "S"
    return {"L": "L", "N": "N"}.get(unicodedata.category(c)[0], "O")


_RUN = re.compile(r"L+|N|O+")                                  # on the kinds: a word, a digit, punctuation
_CONTRACTION = re.compile("|".join(CONTRACTIONS))


def pre_tokenize(text: str) -> list[str]:
    """Split cleaned text into the chunks BPE works on, the way CLIP's regex does.

    At each position the first rule that matches wins: a contraction ('s 't 're 've 'm 'll 'd),
    a run of letters, a single digit (so "2024" becomes 4 chunks), a run of other non-space
    characters (punctuation, emoji). Whitespace only separates chunks.
    """
    kinds = "".join(map(_kind, text))                          # e.g. "it's 2" -> "LLOLSN"
    chunks, i = [], 0
    while True:
        for run in _RUN.finditer(kinds, i):
            start = run.start()
            contraction = _CONTRACTION.match(text, start) if text[start] == "'" else None
            if contraction:                                    # e.g. "'s": the runs restart after it
                chunks.append(contraction.group())
                i = contraction.end()
                break
            chunks.append(text[start:run.end()])
        else:
            return chunks


def clean(text: str) -> str:
    """Unicode NFC, then lower case ("Café" and "CAFÉ" both become "café").

    Lower case character by character, as CLIP's reference does: Python's ``str.lower()`` would
    turn a word-final capital sigma into 'ς', the per-character rule always gives 'σ'.
    """
    return "".join(map(str.lower, unicodedata.normalize("NFC", text)))


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
        _check_merges(self.merges, vocab_path)
        # BPE on ids: a pair of adjacent ids is one int key, left << shift | right.
        self._shift = len(self.encoder).bit_length()
        self._byte_ids = [self.encoder[self.byte_encoder[b]] for b in range(256)]
        self._byte_ids_np = np.array(self._byte_ids, dtype=np.int64)
        self._end_byte_ids = [self.encoder[self.byte_encoder[b] + "</w>"] for b in range(256)]
        self._left = [self.encoder[a] for a, _ in self.merges]    # rank -> left id, right id, merged id
        self._right = [self.encoder[b] for _, b in self.merges]
        self._merged = [self.encoder[a + b] for a, b in self.merges]
        self._rank_of = {(a << self._shift) | b: r for r, (a, b) in enumerate(zip(self._left, self._right))}
        keys = np.array(list(self._rank_of), dtype=np.int64)      # the same table, sorted, for numpy look-ups
        order = np.argsort(keys)
        self._keys_sorted, self._ranks_sorted = keys[order], np.array(list(self._rank_of.values()))[order]
        self._cache_words()

    def _cache_words(self) -> None:
        """An LRU cache word -> ids (functools': thread-safe); words of more than CACHE_MAX_CHARS skip it."""
        self._cached_merge = functools.lru_cache(maxsize=CACHE_SIZE)(lambda word: self._merge(word.encode("utf-8")))

    def __getstate__(self) -> dict:  # pickle / deepcopy: everything but the cache, which starts empty
        return {k: v for k, v in self.__dict__.items() if k != "_cached_merge"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._cache_words()

    @property
    def vocab_size(self) -> int:
        return len(self.encoder)

    def bpe_steps(self, chunk: str) -> list[list[str]]:
        """Every state of BPE on one pre-tokenised chunk: its bytes, then one list per merge applied.

        Each step merges the adjacent pair with the lowest rank (the merge learned earliest),
        everywhere it occurs left to right; it stops when no adjacent pair is a known merge.
        This is the textbook loop, written to be read (quadratic in the chunk's length); ``bpe``
        gives the same final pieces fast.
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
        """The BPE pieces of one pre-tokenised chunk, e.g. "photorealistic" -> ['photo', 'realistic</w>']."""
        return [self.decoder[i] for i in self._bpe_ids(chunk)]

    def _bpe_ids(self, chunk: str) -> tuple[int, ...]:
        """The ids of ``bpe(chunk)``, through the LRU cache (short words only: bounded memory)."""
        if len(chunk) <= CACHE_MAX_CHARS:
            return self._cached_merge(chunk)
        return self._merge(chunk.encode("utf-8"))

    def _merge(self, data: bytes) -> tuple[int, ...]:
        """BPE on the UTF-8 bytes of one word: queue every adjacent pair by rank, then merge."""
        if not data:
            return ()
        if len(data) >= LONG_WORD_BYTES:
            ids = self._byte_ids_np[np.frombuffer(data, dtype=np.uint8)]  # (n,) int64
            ids[-1] = self._end_byte_ids[data[-1]]
            ids, ranks = self._textbook_rounds(ids)
            # The buckets rank -> positions of the remaining pairs, grouped with one stable sort.
            queued = np.flatnonzero(ranks >= 0)
            order = np.argsort(ranks[queued], kind="stable")
            by_rank, positions = ranks[queued][order], queued[order]
            cuts = np.flatnonzero(np.diff(by_rank)) + 1
            starts = np.concatenate([[0], cuts]) if len(by_rank) else cuts
            buckets = dict(zip(by_rank[starts].tolist(), (p.tolist() for p in np.split(positions, cuts))))
            return self._merge_lowest_first(ids.tolist(), buckets)
        ids = [self._byte_ids[b] for b in data[:-1]] + [self._end_byte_ids[data[-1]]]
        rank_of, shift, buckets = self._rank_of, self._shift, {}
        for i in range(len(ids) - 1):
            rank = rank_of.get((ids[i] << shift) | ids[i + 1])
            if rank is not None:
                buckets.setdefault(rank, []).append(i)
        return self._merge_lowest_first(ids, buckets)

    def _pair_ranks(self, ids: np.ndarray) -> np.ndarray:
        """(n,) ids -> (n - 1,) rank of each adjacent pair, -1 where it is no merge."""
        keys = (ids[:-1] << self._shift) | ids[1:]
        at = np.searchsorted(self._keys_sorted, keys).clip(max=len(self._keys_sorted) - 1)
        return np.where(self._keys_sorted[at] == keys, self._ranks_sorted[at], -1)

    def _textbook_rounds(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``bpe_steps``' rounds vectorised, while the best pair is frequent: (n,) ids -> (m,) ids, (m - 1,) ranks."""
        while True:
            ranks = self._pair_ranks(ids)                         # (n - 1,)
            known = ranks[ranks >= 0]
            if len(known) == 0:
                return ids, ranks
            best = known.min()
            at = np.flatnonzero(ranks == best)                    # pair at[k] is symbols at[k], at[k] + 1
            if len(at) < FREQUENT_PAIR * len(ids):
                return ids, ranks                                 # rare: cheaper one at a time
            # In a run "a a a a" the pairs overlap: keep the 1st, 3rd, ... of each run of positions.
            overlaps = np.diff(at, prepend=-2) == 1
            if overlaps.any():
                k = np.arange(len(at))
                run_start = np.maximum.accumulate(np.where(overlaps, 0, k))
                at = at[(k - run_start) % 2 == 0]
            ids[at] = self._merged[best]
            keep = np.ones(len(ids), dtype=bool)
            keep[at + 1] = False
            ids = ids[keep]

    def _merge_lowest_first(self, ids: list[int], buckets: dict[int, list[int]]) -> tuple[int, ...]:
        """Apply merges lowest rank first, leftmost first within a rank. ``buckets``: rank -> positions.

        Symbol i's neighbours are ``prev[i]`` and ``nxt[i]`` (-1: none); a merged-away symbol's id
        becomes -1. A queued position is stale if its pair has changed since: it is skipped.
        """
        n = len(ids)
        nxt, prev = list(range(1, n + 1)), list(range(-1, n - 1))
        nxt[-1] = -1
        pending = list(buckets)                                   # heap of the ranks that have candidates
        heapq.heapify(pending)
        rank_of, shift, push = self._rank_of, self._shift, heapq.heappush
        while pending:
            rank = heapq.heappop(pending)
            a, b, merged = self._left[rank], self._right[rank], self._merged[rank]
            positions = buckets.pop(rank)
            if a == b:                                            # pairs can overlap (a a a): leftmost first,
                positions.sort()                                  # (they are queued in order; this keeps it so)
            for i in positions:
                j = nxt[i]
                if j < 0 or ids[i] != a or ids[j] != b:
                    continue                                      # stale
                ids[i], ids[j] = merged, -1                       # symbol j joins symbol i
                k, p = nxt[j], prev[i]
                nxt[i] = k
                # Queue the two new pairs (merged, right neighbour) at i and (left neighbour, merged) at p;
                # a new pair ranks after the current one. (Written out twice: this is the hot loop.)
                if k >= 0:
                    prev[k] = i
                    new_rank = rank_of.get((merged << shift) | ids[k])
                    if new_rank is not None:
                        if new_rank in buckets:
                            buckets[new_rank].append(i)
                        else:
                            buckets[new_rank] = [i]
                            push(pending, new_rank)
                if p >= 0:
                    new_rank = rank_of.get((ids[p] << shift) | merged)
                    if new_rank is not None:
                        if new_rank in buckets:
                            buckets[new_rank].append(p)
                        else:
                            buckets[new_rank] = [p]
                            push(pending, new_rank)
        return tuple(filter((-1).__ne__, ids))                    # the symbols still alive, in order

    def _ids(self, text: str) -> list[int]:
        """Text (already checked) -> ids, without start/end."""
        ids = []
        for part in _split_specials(text):
            if part in (START_TOKEN, END_TOKEN):
                ids.append(self.encoder[part])
            else:
                for chunk in pre_tokenize(clean(part)):
                    ids.extend(self._bpe_ids(chunk))
        return ids

    def tokenize(self, text: str) -> list[str]:
        """Text -> BPE pieces (no start/end), e.g. "a photo" -> ['a</w>', 'photo</w>']."""
        _check_text(text, "text")
        return [self.decoder[i] for i in self._ids(text)]

    def encode(self, text: str) -> list[int]:
        """Text -> ids with the start and end ids, untruncated."""
        _check_text(text, "text")
        return [self.start_id, *self._ids(text), self.end_id]

    def decode(self, ids: Sequence[int] | torch.Tensor | np.ndarray, skip_special_tokens: bool = True) -> str:
        """Ids -> text (lower case and with CLIP's spacing: "a cat!" decodes to "a cat !")."""
        ids = self._check_ids(ids)
        special = {self.start_id, self.end_id}
        tokens = [self.decoder[i] for i in ids if not (skip_special_tokens and i in special)]
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

    def _check_ids(self, ids: object) -> list[int]:
        """``decode``'s ids as a list of Python ints in 0..vocab_size - 1, or a clear error."""
        allowed = f"token ids, integers in 0..{self.vocab_size - 1}"
        if isinstance(ids, (torch.Tensor, np.ndarray)):
            if ids.ndim != 1:
                raise ValueError(f"ids must be 1-D ({allowed}), got shape {tuple(ids.shape)}")
            integral = (not (ids.is_floating_point() or ids.is_complex()) if isinstance(ids, torch.Tensor)
                        else np.issubdtype(ids.dtype, np.integer) or ids.dtype == bool)
            if not integral:
                raise TypeError(f"ids must be {allowed}, got a {type(ids).__name__} of dtype {ids.dtype}")
            ids = ids.tolist()
        elif isinstance(ids, (str, bytes)) or not isinstance(ids, Sequence):
            raise TypeError(f"ids must be a list, tuple, 1-D tensor or array of {allowed}, got {type(ids).__name__}")
        checked = []
        for k, i in enumerate(ids):
            try:
                i = operator.index(i)
            except TypeError:
                raise TypeError(f"ids must be {allowed}; ids[{k}] is {i!r} ({type(i).__name__})") from None
            if not 0 <= i < self.vocab_size:
                raise ValueError(f"ids must be {allowed}; ids[{k}] is {i}")
            checked.append(i)
        return checked

    def __call__(self, prompts: str | list[str], max_length: int = MAX_LENGTH) -> torch.Tensor:
        """Prompts -> LongTensor (B, max_length) as Stable Diffusion v1 feeds its text encoder.

        Each row is ``<start> tokens... <end>`` padded with the end id. A prompt longer than
        ``max_length`` tokens keeps its first ``max_length - 2`` tokens and its end id, with a
        warning that names the dropped text (as diffusers does). ``max_length``: 2..77.
        """
        if isinstance(prompts, str):
            prompts = [prompts]
        if not isinstance(prompts, (list, tuple)):
            raise TypeError(f"prompts must be a str or a list of str, got {type(prompts).__name__}")
        for k, p in enumerate(prompts):
            if not isinstance(p, str):
                raise TypeError(f"prompts must be a str or a list of str; prompts[{k}] is a {type(p).__name__}")
        if isinstance(max_length, bool) or not isinstance(max_length, numbers.Integral):
            raise TypeError(f"max_length must be an int in 2..{self.model_max_length}, got {type(max_length).__name__}")
        if not 2 <= max_length <= self.model_max_length:
            raise ValueError(f"max_length must be in 2..{self.model_max_length} (room for the start and end ids, "
                             f"at most CLIP's context), got {max_length}")
        max_length = int(max_length)
        for k, p in enumerate(prompts):
            _check_text(p, f"prompts[{k}]")
        rows = []
        for prompt in prompts:
            ids = [self.start_id, *self._ids(prompt), self.end_id]
            if len(ids) > max_length:
                dropped = self.decode(ids[max_length - 1:-1])
                warnings.warn(f"The following part of your input was truncated because CLIP can only handle "
                              f"sequences up to {max_length} tokens: {dropped!r}", stacklevel=2)
                ids = ids[:max_length - 1] + [self.end_id]
            rows.append(ids + [self.pad_id] * (max_length - len(ids)))
        return torch.tensor(rows, dtype=torch.long).reshape(len(rows), max_length)  # (B, max_length)

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


def _check_merges(merges: list[tuple[str, str]], vocab_path: str | Path) -> None:
    """Every merge must build on tokens made by earlier merges (what ``bpe``'s fast loop relies on)."""
    made_by = {a + b: rank for rank, (a, b) in enumerate(merges)}
    for rank, pair in enumerate(merges):
        for token in pair:
            if made_by.get(token, -1) >= rank:
                raise ValueError(f"vocab_path {vocab_path}: merge {rank} {pair} uses {token!r}, which only the "
                                 f"later merge {made_by[token]} makes; each merge must build on earlier ones")


def _check_text(text: object, name: str) -> None:
    """A str of valid Unicode, or a TypeError/ValueError naming the argument (and the bad position)."""
    if not isinstance(text, str):
        raise TypeError(f"{name} must be a str, got {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:  # only lone surrogates fail: they are not text (transformers rejects them too)
        raise ValueError(f"{name} contains a lone surrogate U+{ord(text[e.start]):04X} at position {e.start}: "
                         f"not valid Unicode text; decode bytes with errors='replace' first") from None


_SPECIALS = re.compile(f"({re.escape(START_TOKEN)}|{re.escape(END_TOKEN)})")


def _split_specials(text: str) -> list[str]:
    """Split raw text around literal <|startoftext|> / <|endoftext|>, which map straight to their ids."""
    return [part for part in _SPECIALS.split(text) if part]
