"""Text tokenization with fast (Rust) tokenizers, trained and used offline.

``tokenizers`` replaces torchtext (discontinued; its last release supports torch
2.3 only): :func:`train_tokenizer` builds a vocabulary from the user's own corpus
(the replacement for ``torchtext.vocab.build_vocab_from_iterator``),
:class:`Tokenize` turns one text or a list of texts into token ids (a list is
encoded in one batched Rust call), and :func:`load_tokenizer` reads a saved
``tokenizer.json``. Nothing is downloaded from a hub.

``tokenizers`` (extra ``dataforge[text]``) is imported inside the functions.

NOTE [pad id 0]: :func:`train_tokenizer` gives the special tokens the ids 0, 1, ...
in the order given, so the first one (``"[PAD]"`` by default) has id 0 and a
zero-filled padding collate pads with it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import tokenizers

__all__ = ["Tokenize", "load_tokenizer", "train_tokenizer"]

_KINDS = ("wordpiece", "bpe")
_PAD_NAMES = ("[PAD]", "<pad>", "<|pad|>")


def _import_tokenizers() -> Any:
    try:
        import tokenizers
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "text tokenization needs the optional tokenizers package: pip install 'dataforge[text]'"
        ) from exc
    return tokenizers


def load_tokenizer(path: str | os.PathLike[str]) -> tokenizers.Tokenizer:
    """Load a ``tokenizers.Tokenizer`` from a ``tokenizer.json`` file (or a folder holding one).

    Raises:
        FileNotFoundError: naming the path, when there is no such file.
        ValueError: when the file is not a valid tokenizer.

    Example:
        >>> tok = train_tokenizer(["a b c", "a b"] * 5, vocab_size=30)
        >>> import tempfile, os; d = tempfile.mkdtemp(); tok.save(os.path.join(d, "tokenizer.json"))
        >>> load_tokenizer(d).get_vocab_size() == tok.get_vocab_size()
        True
    """
    tk = _import_tokenizers()
    p = Path(path)
    if p.is_dir():
        p = p / "tokenizer.json"
    if not p.is_file():
        raise FileNotFoundError(
            f"tokenizer file does not exist: {str(p)!r}; pass the path of a tokenizer.json "
            "(saved with tokenizer.save(path)) or of the folder holding it"
        )
    try:
        return tk.Tokenizer.from_file(str(p))
    except Exception as exc:
        raise ValueError(f"{str(p)!r} is not a valid tokenizer.json ({exc})") from exc


def _as_tokenizer(tokenizer: Any) -> tuple[tokenizers.Tokenizer, int | None]:
    """A private copy of the Rust tokenizer behind ``tokenizer``, and its pad id if known."""
    tk = _import_tokenizers()
    if isinstance(tokenizer, Tokenize):
        return tk.Tokenizer.from_str(tokenizer.tokenizer.to_str()), tokenizer.pad_id
    if isinstance(tokenizer, (str, os.PathLike)):
        tokenizer = load_tokenizer(tokenizer)
    if isinstance(tokenizer, tk.Tokenizer):
        # A copy: truncation / padding settings below must not leak into the caller's object.
        tok = tk.Tokenizer.from_str(tokenizer.to_str())
        pad = next((tok.token_to_id(t) for t in _PAD_NAMES if tok.token_to_id(t) is not None), None)
        return tok, pad
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if isinstance(backend, tk.Tokenizer):  # transformers PreTrainedTokenizerFast
        return tk.Tokenizer.from_str(backend.to_str()), getattr(tokenizer, "pad_token_id", None)
    raise TypeError(
        f"tokenizer must be a tokenizers.Tokenizer, a transformers fast tokenizer or a path to a "
        f"tokenizer.json, got {type(tokenizer).__name__}; for a transformers slow tokenizer load "
        "the fast one (AutoTokenizer.from_pretrained(..., use_fast=True))"
    )


class Tokenize:
    """Text -> token ids with a fast tokenizer; a list of texts is encoded in one batched call.

    Args:
        tokenizer: a ``tokenizers.Tokenizer``, a transformers ``PreTrainedTokenizerFast``,
            or a path to a ``tokenizer.json`` (or its folder). A private copy is used.
        max_length: truncate to this many ids (special tokens included); ``None``: no limit.
        truncation: truncate to ``max_length`` (must be true when ``max_length`` is set).
        add_special_tokens: add the tokenizer's template tokens (e.g. ``[CLS]`` / ``[SEP]``).
        text_key: the entry to tokenize when called on a sample dict; the ids are
            added as ``"input_ids"``.

    Example:
        >>> tok = train_tokenizer(["the cat sat", "the dog sat"] * 10, vocab_size=40)
        >>> t = Tokenize(tok, max_length=4)
        >>> ids = t("the cat sat on the mat")
        >>> len(ids), t(["the cat", "sat"]) == [t("the cat"), t("sat")]
        (4, True)
    """

    def __init__(
        self,
        tokenizer: Any,
        max_length: int | None = None,
        truncation: bool = True,
        add_special_tokens: bool = True,
        *,
        text_key: str = "text",
    ) -> None:
        if max_length is not None and (
            isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1
        ):
            raise ValueError(f"max_length must be a positive int or None, got {max_length!r}")
        if max_length is not None and not truncation:
            raise ValueError(
                f"max_length={max_length} has no effect with truncation=False; "
                "drop max_length or set truncation=True"
            )
        self.tokenizer, self.pad_id = _as_tokenizer(tokenizer)
        self.max_length = max_length
        self.truncation = bool(truncation)
        self.add_special_tokens = bool(add_special_tokens)
        self.text_key = text_key
        self.tokenizer.no_padding()
        if max_length is not None:
            self.tokenizer.enable_truncation(max_length)
        else:
            self.tokenizer.no_truncation()
        # encode_batch_fast (tokenizers >= 0.20) skips computing character offsets.
        self._batch = getattr(self.tokenizer, "encode_batch_fast", self.tokenizer.encode_batch)

    @property
    def vocab_size(self) -> int:
        return int(self.tokenizer.get_vocab_size())

    def encode(self, text: str) -> list[int]:
        """Token ids of one text."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return self.tokenizer.encode(text, add_special_tokens=self.add_special_tokens).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, in one batched (multi-threaded Rust) call."""
        texts = list(texts)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"texts[{i}] must be a str, got {type(t).__name__}")
        return [e.ids for e in self._batch(texts, add_special_tokens=self.add_special_tokens)]

    def __call__(self, text: Any) -> Any:
        if isinstance(text, str):
            return self.encode(text)
        if isinstance(text, Mapping):
            if self.text_key not in text:
                raise KeyError(
                    f"sample dict has no {self.text_key!r} key (keys: {sorted(map(str, text))}); "
                    "pass text_key= to name the text entry"
                )
            return {**text, "input_ids": self.encode(text[self.text_key])}
        if isinstance(text, (list, tuple)):
            return self.encode_batch(text)
        raise TypeError(
            f"Tokenize expects a str, a list of str or a sample dict, got {type(text).__name__}"
        )

    def __repr__(self) -> str:
        return (
            f"Tokenize(vocab_size={self.vocab_size}, max_length={self.max_length}, "
            f"add_special_tokens={self.add_special_tokens})"
        )


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int,
    kind: str = "wordpiece",
    special_tokens: Sequence[str] = ("[PAD]", "[UNK]", "[CLS]", "[SEP]"),
    lowercase: bool = True,
    min_frequency: int = 2,
) -> tokenizers.Tokenizer:
    """Train a tokenizer offline on an iterator of texts.

    ``"wordpiece"`` is BERT-style (BERT normalizer and pre-tokenizer, ``##``
    continuation pieces, unknown characters map to ``"[UNK]"``); ``"bpe"`` is
    byte-level BPE (GPT-2 style, never unknown). When ``"[CLS]"`` and ``"[SEP]"``
    are special tokens, encodings are wrapped as ``[CLS] ... [SEP]``.
    Special tokens get ids 0, 1, ... in order: the first (``"[PAD]"``) is id 0.
    Save with ``tok.save(path)``, load with :func:`load_tokenizer`.

    NOTE [not bit-reproducible]: the Rust trainer breaks frequency ties in hash
    order, so two trainings on the same texts may assign some ids differently.
    Train once and save the result; under ``torch.distributed`` train on rank 0
    and have every rank load the saved file (the text recipe does this).

    Args:
        texts: the corpus, any iterable of str (streamed, not held in memory).
        vocab_size: the target vocabulary size (special tokens included).
        kind: ``"wordpiece"`` or ``"bpe"``.
        special_tokens: tokens that are never split; the first is the padding token.
        lowercase: lowercase before tokenizing.
        min_frequency: minimum count for a merge / piece to enter the vocabulary.

    Example:
        >>> tok = train_tokenizer(["hello world", "hello there"] * 10, vocab_size=50)
        >>> tok.token_to_id("[PAD]"), tok.encode("hello").tokens
        (0, ['[CLS]', 'hello', '[SEP]'])
    """
    tk = _import_tokenizers()
    from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers

    if isinstance(texts, (str, bytes)) or not isinstance(texts, Iterable):
        raise TypeError(
            f"texts must be an iterable of str (a list, a generator, a dataset column), got "
            f"{type(texts).__name__}; wrap a single text in a list"
        )
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 1:
        raise ValueError(f"vocab_size must be a positive int, got {vocab_size!r}")
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {_KINDS}, got {kind!r}")
    specials = list(special_tokens)
    if not specials or not all(isinstance(s, str) and s for s in specials):
        raise ValueError(
            f"special_tokens must be a non-empty sequence of non-empty str (the first is the "
            f"padding token, id 0), got {special_tokens!r}"
        )
    if len(set(specials)) != len(specials):
        raise ValueError(f"special_tokens must be distinct, got {special_tokens!r}")
    if vocab_size <= len(specials):
        raise ValueError(
            f"vocab_size={vocab_size} leaves no room beyond the {len(specials)} special tokens; "
            "raise vocab_size"
        )
    if kind == "bpe" and vocab_size < 256 + len(specials):
        raise ValueError(
            f"kind='bpe' is byte-level: its base alphabet is the 256 bytes, so vocab_size must be "
            f"at least 256 + {len(specials)} special tokens, got {vocab_size}; raise vocab_size "
            "or use kind='wordpiece'"
        )
    if isinstance(min_frequency, bool) or not isinstance(min_frequency, int) or min_frequency < 1:
        raise ValueError(f"min_frequency must be a positive int, got {min_frequency!r}")

    trainer: Any
    if kind == "wordpiece":
        if "[UNK]" not in specials:
            raise ValueError(
                f"kind='wordpiece' needs '[UNK]' among special_tokens, got {special_tokens!r}"
            )
        tok = tk.Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=specials,
            show_progress=False,
        )
    else:
        tok = tk.Tokenizer(models.BPE())
        norms = [normalizers.NFKC()] + ([normalizers.Lowercase()] if lowercase else [])
        tok.normalizer = normalizers.Sequence(norms)
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
    tok.train_from_iterator(iter(texts), trainer=trainer)
    if "[CLS]" in specials and "[SEP]" in specials:
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]",
            pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[(t, tok.token_to_id(t)) for t in ("[CLS]", "[SEP]")],
        )
    pad_id = tok.token_to_id(specials[0])
    if pad_id != 0:  # pragma: no cover - guaranteed by the trainers
        raise RuntimeError(f"padding token {specials[0]!r} got id {pad_id}, expected 0")
    return tok
