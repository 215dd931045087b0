"""A tiny DistilBERT sequence classifier built from nothing, for tests (no Hub, no downloads).

The tokenizer is a WordPiece trained on a small corpus inside the test; the model is a 2-layer
DistilBERT with random weights. Saved with `save_pretrained`, so it loads through the same
`from_pretrained` path a real model does.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

CORPUS = [
    "i love this so much, what a great day",
    "this is terrible and i hate it",
    "the meeting is at noon in the main hall",
    "best purchase ever, totally recommend it",
    "worst service, never again, awful",
    "the train leaves the station at five",
    "so happy and excited about the news",
    "sad and angry about the delay",
    "@user check http the report was published today #news",
    "not bad at all, but not great either",
]


def train_tokenizer(corpus: Sequence[str] = CORPUS):
    """A BERT-style (uncased WordPiece) fast tokenizer whose vocabulary is learnt from `corpus`.

    Every word of the corpus becomes one token, plus single characters (as word starts and as
    `##` continuations) so any text tokenises. The vocabulary is built in sorted order rather than
    by the `tokenizers` trainer, whose tie-breaking follows hash order and so changed the
    vocabulary, and with it what a test model learnt, from one run to the next.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import DistilBertTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    normalizer = normalizers.BertNormalizer(lowercase=True)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    words = {
        word for text in corpus for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text))
    }
    chars = sorted(set("abcdefghijklmnopqrstuvwxyz0123456789") | {c for w in words for c in w})
    tokens = specials + sorted(words | set(chars)) + [f"##{c}" for c in chars]
    vocab = {token: i for i, token in enumerate(dict.fromkeys(tokens))}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.WordPiece()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    return DistilBertTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=512,
    )


def build_tiny_classifier(
    out_dir: Path,
    labels: Sequence[str] = ("negative", "neutral", "positive"),
    corpus: Sequence[str] = CORPUS,
    seed: int = 0,
    layers: int = 2,
    dim: int = 32,
) -> Path:
    """Write a tiny DistilBERT classifier + tokenizer to `out_dir` and return it."""
    import torch
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    torch.manual_seed(seed)
    tokenizer = train_tokenizer(corpus)
    config = DistilBertConfig(
        vocab_size=len(tokenizer),
        n_layers=layers,
        n_heads=2,
        dim=dim,
        hidden_dim=dim * 2,
        max_position_embeddings=512,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={lab: i for i, lab in enumerate(labels)},
    )
    model = DistilBertForSequenceClassification(config).eval()
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
