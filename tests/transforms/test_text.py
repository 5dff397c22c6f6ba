from __future__ import annotations

import pytest

tokenizers = pytest.importorskip("tokenizers")

from dataforge.transforms.text import Tokenize, load_tokenizer, train_tokenizer  # noqa: E402

CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "a lazy dog sleeps in the sun",
    "the fox and the dog are friends",
    "Brown foxes run quickly through the forest",
] * 20


@pytest.fixture(scope="module", params=["wordpiece", "bpe"])
def tok(request):
    vocab = 120 if request.param == "wordpiece" else 320
    return train_tokenizer(iter(CORPUS), vocab_size=vocab, kind=request.param)


def test_train_special_tokens_and_pad_zero(tok):
    for i, name in enumerate(("[PAD]", "[UNK]", "[CLS]", "[SEP]")):
        assert tok.token_to_id(name) == i
    enc = tok.encode("the lazy fox")
    assert enc.tokens[0] == "[CLS]" and enc.tokens[-1] == "[SEP]"
    assert 10 < tok.get_vocab_size() <= 320
    assert tok.decode(enc.ids).replace(" ", "") == "thelazyfox"


def test_lowercase_option():
    lower = train_tokenizer(CORPUS, vocab_size=100)
    assert lower.encode("THE FOX").ids == lower.encode("the fox").ids
    cased = train_tokenizer(CORPUS, vocab_size=300, lowercase=False, kind="bpe")
    assert cased.encode("THE").ids != cased.encode("the").ids


def test_save_load_round_trip(tok, tmp_path):
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    for where in (path, tmp_path, str(path)):
        loaded = load_tokenizer(where)
        assert loaded.encode(CORPUS[1]).ids == tok.encode(CORPUS[1]).ids
    assert Tokenize(path)(CORPUS[0]) == tok.encode(CORPUS[0]).ids


def test_tokenize_single_batch_and_dict(tok):
    t = Tokenize(tok)
    texts = CORPUS[:5]
    assert t(texts) == [t(x) for x in texts] == [tok.encode(x).ids for x in texts]
    out = t({"text": CORPUS[0], "label": 1})
    assert out["input_ids"] == t(CORPUS[0]) and out["label"] == 1
    assert t.pad_id == 0 and t.vocab_size == tok.get_vocab_size()


def test_truncation_and_special_tokens(tok):
    t = Tokenize(tok, max_length=5)
    ids = t(CORPUS[0])
    assert len(ids) == 5 and ids[0] == 2 and ids[-1] == 3  # [CLS] ... [SEP] kept
    assert all(len(x) <= 5 for x in t(CORPUS[:4]))
    plain = Tokenize(tok, add_special_tokens=False)
    assert plain(CORPUS[0]) == tok.encode(CORPUS[0]).ids[1:-1]


def test_tokenize_does_not_mutate_callers_tokenizer(tok):
    Tokenize(tok, max_length=3)
    assert len(tok.encode(CORPUS[0]).ids) > 3


def test_transformers_fast_tokenizer(tok):
    transformers = pytest.importorskip("transformers")
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]")
    t = Tokenize(fast)
    assert t(CORPUS[2]) == tok.encode(CORPUS[2]).ids
    assert t.pad_id == 0


def test_errors(tmp_path, tok):
    missing = tmp_path / "nope" / "tokenizer.json"
    with pytest.raises(FileNotFoundError, match="nope"):
        Tokenize(str(missing))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        load_tokenizer(bad)
    with pytest.raises(TypeError, match="tokenizers.Tokenizer"):
        Tokenize(42)
    with pytest.raises(ValueError, match="max_length"):
        Tokenize(tok, max_length=0)
    with pytest.raises(ValueError, match="truncation=False"):
        Tokenize(tok, max_length=8, truncation=False)
    t = Tokenize(tok)
    with pytest.raises(TypeError, match="texts\\[1\\]"):
        t(["ok", 3])
    with pytest.raises(TypeError, match="str"):
        t(3.5)


@pytest.mark.parametrize(
    ("kwargs", "exc", "words"),
    [
        ({"texts": "one text"}, TypeError, "iterable of str"),
        ({"vocab_size": 0}, ValueError, "vocab_size"),
        ({"kind": "unigram"}, ValueError, "kind"),
        ({"special_tokens": ()}, ValueError, "special_tokens"),
        ({"special_tokens": ("[PAD]", "[PAD]")}, ValueError, "distinct"),
        ({"special_tokens": ("[PAD]", "[CLS]")}, ValueError, r"\[UNK\]"),
        ({"vocab_size": 3}, ValueError, "no room"),
        ({"min_frequency": 0}, ValueError, "min_frequency"),
        ({"kind": "bpe", "vocab_size": 200}, ValueError, "byte-level"),
    ],
)
def test_train_validation(kwargs, exc, words):
    args = {"texts": CORPUS, "vocab_size": 100, **kwargs}
    with pytest.raises(exc, match=words):
        train_tokenizer(**args)
