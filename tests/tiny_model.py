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


def train_tokenizer(corpus: Sequence[str] = CORPUS, vocab_size: int = 400):
    """A BERT-style (uncased WordPiece) fast tokenizer trained on `corpus`."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import DistilBertTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials)
    # Letters and digits as a floor so any text tokenises to something other than [UNK].
    alphabet = list("abcdefghijklmnopqrstuvwxyz0123456789")
    tok.train_from_iterator(list(corpus) + alphabet, trainer=trainer)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
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
