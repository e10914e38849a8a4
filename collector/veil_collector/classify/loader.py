"""Find and load detoxify checkpoints through detoxify's own loader.

A model is named by its detoxify type (``original``, ``unbiased``, ``multilingual``, ``original-small``,
``unbiased-small``) or by a path. The folder layout for offline use, one folder per model under
``VEIL_MODELS_DIR``::

    $VEIL_MODELS_DIR/original/
        toxic_original-c1212f89.ckpt      # detoxify's release file, unchanged (exactly one *.ckpt)
        config.json, vocab.txt, ...       # the base model's Hugging Face config and tokenizer files,
                                          # e.g. AutoTokenizer.from_pretrained("bert-base-uncased")
                                          # .save_pretrained(folder), and the same for AutoConfig

Resolution order: an existing path (a folder as above, or a ``.ckpt`` file with the HF files beside it);
then ``$VEIL_MODELS_DIR/<name>/``; then the release URL, downloaded (and cached) by ``torch.hub`` exactly as
detoxify does, with the config and tokenizer from the Hugging Face Hub. ``HF_HUB_OFFLINE=1`` skips every
download attempt.

Workaround (detoxify 0.5.4, see unitaryai/detoxify PR #126): even with ``huggingface_config_path``,
detoxify first calls ``config_class.from_pretrained(<arch.args.model_type>)``, which asks the Hub for e.g.
``bert-base-uncased`` and fails offline. When a local config folder is used we therefore read the checkpoint
ourselves, point ``arch.args.model_type`` at that folder, and hand detoxify the patched checkpoint as an
in-memory file (``torch.load`` accepts file objects). Everything else (state-dict loading, class-name
standardisation, tokenizer) is detoxify's code unchanged; it works with transformers 5.x.

Security: detoxify checkpoints are pickles (``torch.load(weights_only=False)``), so load only checkpoints
from a source you trust, as with detoxify itself.
"""

from __future__ import annotations

import io
import logging
import os
import urllib.error
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import torch
from detoxify import Detoxify
from detoxify.detoxify import MODEL_URLS

logger = logging.getLogger(__name__)

DETOXIFY_MODELS: tuple[str, ...] = tuple(MODEL_URLS)

# Where the unbiased family lists the identity heads that follow the toxicity heads (detoxify's
# predict() ignores them; we return them).
_IDENTITY_KEY = "identity_classes"


class ModelUnavailable(RuntimeError):
    """The weights, config or tokenizer could not be had (offline, download failed, files missing)."""


@dataclass(frozen=True, slots=True)
class ModelSource:
    """Where a detoxify model comes from.

    Attributes:
        name: the detoxify model type, or the folder/file name for a path.
        checkpoint: a local ``.ckpt`` path, or the release URL to download.
        config_dir: the local Hugging Face config + tokenizer folder; None fetches them from the Hub.
    """

    name: str
    checkpoint: Path | str
    config_dir: Path | None

    @property
    def is_remote(self) -> bool:
        return isinstance(self.checkpoint, str)

    @property
    def version(self) -> str:
        """The checkpoint's file name without suffix (detoxify's names carry a hash, e.g. ``-c1212f89``)."""
        if isinstance(self.checkpoint, Path):
            return self.checkpoint.stem
        return PurePosixPath(urlsplit(self.checkpoint).path).stem


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """A model loaded by detoxify, with the label names read from its checkpoint config.

    Attributes:
        detoxify: detoxify's own object (``.model``, ``.tokenizer``, ``.predict``).
        labels: toxicity labels in head order, standardised by detoxify (``toxic`` -> ``toxicity``).
        identity_labels: the identity heads that follow them (the ``unbiased`` family), else empty.
        name: ``detoxify-<name>``.
        version: the checkpoint file's stem.
    """

    detoxify: Detoxify
    labels: tuple[str, ...]
    identity_labels: tuple[str, ...]
    name: str
    version: str


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` forbids downloads (Hugging Face's switch, honoured for torch.hub too)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def resolve_model(model: str, models_dir: Path | None = None) -> ModelSource:
    """Decide where ``model`` comes from, without loading anything.

    Args:
        model: a detoxify model type (one of :data:`DETOXIFY_MODELS`) or a path to a model folder or a
            ``.ckpt`` file.
        models_dir: the offline models folder (``VEIL_MODELS_DIR``); ``<models_dir>/<model>/`` wins over a
            download.

    Raises:
        ValueError: ``model`` is neither a known name nor an existing path, or a folder holds no or several
            checkpoints.
    """
    path = Path(model).expanduser()
    if path.is_dir():
        return _folder_source(path.name, path)
    if path.is_file():
        config_dir = path.parent if (path.parent / "config.json").is_file() else None
        return ModelSource(name=path.stem, checkpoint=path, config_dir=config_dir)
    if model not in MODEL_URLS:
        raise ValueError(
            f"unknown toxicity model {model!r}: expected one of {', '.join(DETOXIFY_MODELS)}, "
            f"or a path to a folder holding a detoxify .ckpt and its Hugging Face config"
        )
    if models_dir is not None and (Path(models_dir) / model).is_dir():
        return _folder_source(model, Path(models_dir) / model)
    return ModelSource(name=model, checkpoint=MODEL_URLS[model], config_dir=None)


def _folder_source(name: str, folder: Path) -> ModelSource:
    checkpoints = sorted(folder.glob("*.ckpt"))
    if len(checkpoints) != 1:
        found = ", ".join(p.name for p in checkpoints) or "none"
        raise ValueError(f"model folder {folder} must hold exactly one detoxify .ckpt file; found {found}")
    config_dir = folder if (folder / "config.json").is_file() else None
    return ModelSource(name=name, checkpoint=checkpoints[0], config_dir=config_dir)


def load_model(source: ModelSource, device: str | torch.device = "cpu") -> LoadedModel:
    """Load ``source`` with detoxify's ``Detoxify(...)`` and read its label names.

    Args:
        source: from :func:`resolve_model`.
        device: where the model runs (``cpu``, ``cuda``, ``cuda:1``, ...).

    Raises:
        ModelUnavailable: the checkpoint, config or tokenizer could not be had (offline, download failed).
        ValueError: the file is not a detoxify checkpoint (the message says what is missing).
    """
    checkpoint = _read_checkpoint(source)
    arch = _require(checkpoint, ("config", "arch", "args"), source)
    dataset = _require(checkpoint, ("config", "dataset", "args"), source)
    if "classes" not in dataset:
        raise ValueError(f"{source.checkpoint}: checkpoint config has no dataset.args.classes")
    num_classes = int(arch.get("num_classes", len(dataset["classes"])))
    extra = max(0, num_classes - len(dataset["classes"]))
    identity_labels = tuple(dataset.get(_IDENTITY_KEY, ()))[:extra]

    if source.config_dir is not None:
        # The PR #126 workaround described in the module docstring.
        patched_arch = {**arch, "model_type": str(source.config_dir)}
        config = {**checkpoint["config"], "arch": {**checkpoint["config"]["arch"], "args": patched_arch}}
        checkpoint = {"config": config, "state_dict": checkpoint["state_dict"]}
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    buffer.seek(0)
    del checkpoint
    try:
        detoxify = Detoxify(
            source.name,  # detoxify uses the type only to pick a URL when no checkpoint is given
            checkpoint=buffer,
            device=device,
            huggingface_config_path=str(source.config_dir) if source.config_dir is not None else None,
        )
    except OSError as exc:  # transformers raises OSError for unreachable or missing hub/config files
        raise ModelUnavailable(f"cannot load the config/tokenizer for {source.name!r}: {exc}") from exc
    detoxify.model.eval()
    return LoadedModel(
        detoxify=detoxify,
        labels=tuple(detoxify.class_names),
        identity_labels=identity_labels,
        name=f"detoxify-{source.name}",
        version=source.version,
    )


def _read_checkpoint(source: ModelSource) -> dict[str, Any]:
    if isinstance(source.checkpoint, Path):
        loaded = torch.load(source.checkpoint, map_location="cpu", weights_only=False)
    else:
        if hub_offline():
            raise ModelUnavailable(f"HF_HUB_OFFLINE is set and {source.name!r} is not in the models folder")
        try:
            loaded = torch.hub.load_state_dict_from_url(
                source.checkpoint, map_location="cpu", weights_only=False, progress=False
            )
        except (urllib.error.URLError, OSError) as exc:
            raise ModelUnavailable(f"cannot download {source.checkpoint}: {exc}") from exc
    if not isinstance(loaded, dict) or "config" not in loaded or "state_dict" not in loaded:
        raise ValueError(
            f"{source.checkpoint} is not a detoxify checkpoint (needs 'config' and 'state_dict')"
        )
    return loaded


def _require(checkpoint: dict[str, Any], keys: tuple[str, ...], source: ModelSource) -> dict[str, Any]:
    node: Any = checkpoint
    for key in keys:
        if not isinstance(node, dict) or key not in node:
            raise ValueError(f"{source.checkpoint}: checkpoint config has no {'.'.join(keys)}")
        node = node[key]
    return node
