"""Small models for the recipes (copy and replace with your own)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


class SmallCNN(nn.Module):
    """Four conv blocks and a linear head; trains on a CPU in minutes at 64 px."""

    def __init__(self, num_classes: int, width: int = 32) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for i in range(4):
            c_out = width * 2 ** min(i, 2)
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                       nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(x), 1), 1))


def resnet18(num_classes: int) -> nn.Module:
    """torchvision ResNet-18 with a ``num_classes`` head ``fc`` (weights from
    ``--pretrained``, a local file: nothing is downloaded)."""
    from torchvision.models import resnet18 as tv_resnet18

    model = tv_resnet18(weights=None)
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model


def freeze_backbone(model: nn.Module, head: str) -> None:
    """Train only the classifier: every parameter outside the submodule ``head`` is frozen."""
    if not any(name.startswith(head + ".") for name, _ in model.named_parameters()):
        raise ValueError(f"head must name a submodule with parameters, got {head!r}")
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith(head + "."))


class BagOfEmbeddings(nn.Module):
    """Mean of token embeddings (mask-aware) and a linear head."""

    def __init__(self, vocab_size: int, num_classes: int, dim: int = 64) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab_size, dim, padding_idx=0)
        self.head = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, num_classes))

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask.unsqueeze(-1).to(self.emb.weight.dtype)
        pooled = (self.emb(ids) * m).sum(1) / m.sum(1).clamp(min=1)
        return self.head(pooled)


class TinyTransformer(nn.Module):
    """A two-layer transformer encoder with mean pooling."""

    def __init__(self, vocab_size: int, num_classes: int, dim: int = 64, layers: int = 2,
                 heads: int = 4, max_len: int = 512) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab_size, dim, padding_idx=0)
        self.pos = nn.Embedding(max_len, dim)
        layer = nn.TransformerEncoderLayer(dim, heads, dim * 2, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(ids.shape[1], device=ids.device).clamp(max=self.pos.num_embeddings - 1)
        h = self.encoder(self.emb(ids) + self.pos(pos), src_key_padding_mask=~mask)
        m = mask.unsqueeze(-1).to(h.dtype)
        return self.head((h * m).sum(1) / m.sum(1).clamp(min=1))


class HFClassifier(nn.Module):
    """A local HuggingFace sequence-classification model (``from_pretrained`` on a folder;
    nothing is downloaded). Use it with the model's own tokenizer (``--tokenizer``)."""

    def __init__(self, path: str, num_classes: int) -> None:
        super().__init__()
        from transformers import AutoModelForSequenceClassification

        if not Path(path).is_dir():
            raise FileNotFoundError(f"--hf-model folder does not exist: {path!r}")
        self.model = AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=num_classes, local_files_only=True, ignore_mismatched_sizes=True)

    def check_inputs(self, vocab_size: int, max_length: int) -> None:
        """Refuse token ids or lengths the model cannot embed (an index error mid-training).

        Args:
            vocab_size: the tokenizer's vocabulary size (ids run up to ``vocab_size - 1``).
            max_length: the longest padded batch the loader can produce.
        """
        rows = self.model.get_input_embeddings().num_embeddings
        if vocab_size > rows:
            raise ValueError(f"the tokenizer has {vocab_size} tokens but the model embeds only {rows}: "
                             "it is not this model's tokenizer; pass the model's own (--tokenizer "
                             "FOLDER/tokenizer.json)")
        positions = getattr(self.model.config, "max_position_embeddings", None)
        if isinstance(positions, int) and max_length > positions:
            raise ValueError(f"batches can hold {max_length} tokens (tokenizer.args.max_length padded to "
                             f"collate.args.pad_to_multiple_of) but the model has {positions} positions: "
                             "lower tokenizer.args.max_length")

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=ids, attention_mask=mask.long()).logits
