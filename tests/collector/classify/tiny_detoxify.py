"""Tiny random-weight detoxify checkpoints in detoxify's release format (helpers for these tests).

The checkpoint layout is what detoxify's ``load_checkpoint`` reads from its release files:
``{"config": {"arch": {"args": {model_type, model_name, tokenizer_name, num_classes}},
"dataset": {"args": {"classes": [...], "identity_classes": [...]}}}, "state_dict": ...}``.
``arch.args.model_type`` names the Hub model (``bert-base-uncased``), as in the real files, so loading
offline exercises the PR #126 workaround. No network: ``HF_HUB_OFFLINE=1`` for every test here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

ORIGINAL_CLASSES = ["toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate"]
UNBIASED_CLASSES = [
    "toxicity",
    "severe_toxicity",
    "obscene",
    "identity_attack",
    "insult",
    "threat",
    "sexual_explicit",
]
IDENTITY_CLASSES = [
    "male", "female", "homosexual_gay_or_lesbian", "christian", "jewish", "muslim", "black", "white",
    "psychiatric_or_mental_illness",
]  # fmt: skip
_VOCABULARY = (
    "the a an you are is was idiot nice day hello world good bad stupid i am love hate people women men "
    "muslim christian this that what when why how very really not no yes thanks please help me with code "
    "python error fix it"
)
WORDS = _VOCABULARY.split()


def write_tiny_model(
    folder: Path, classes: list[str], identity_classes: Sequence[str] = (), *, seed: int = 0
) -> Path:
    """Write a 2-layer BERT with random weights as ``folder/<name>.ckpt`` plus its HF config and tokenizer.

    The weights use a large init range so that scores spread over (0, 1) and a mix-up of texts is visible.
    """
    folder.mkdir(parents=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    num_classes = len(classes) + len(identity_classes)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        num_labels=num_classes,
        initializer_range=0.5,
    )
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config)
    BertTokenizer(str(folder / "vocab.txt"), do_lower_case=True, model_max_length=512).save_pretrained(folder)
    config.save_pretrained(folder)
    dataset_args: dict[str, object] = {"classes": classes}
    if identity_classes:
        dataset_args["identity_classes"] = list(identity_classes)
    checkpoint = {
        "config": {
            "arch": {
                "args": {
                    "model_type": "bert-base-uncased",
                    "model_name": "BertForSequenceClassification",
                    "tokenizer_name": "BertTokenizer",
                    "num_classes": num_classes,
                }
            },
            "dataset": {"args": dataset_args},
        },
        "state_dict": model.state_dict(),
    }
    path = folder / "toxic_tiny-0123abcd.ckpt"
    torch.save(checkpoint, path)
    return path


def write_tiny_text_classifier(folder: Path, labels: Sequence[str]) -> Path:
    """A tiny random BERT text classifier saved the Hugging Face way (as a bias model folder would be)."""
    folder.mkdir(parents=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    torch.manual_seed(2)
    BertForSequenceClassification(config).save_pretrained(folder)
    BertTokenizer(str(folder / "vocab.txt"), do_lower_case=True, model_max_length=512).save_pretrained(folder)
    return folder
