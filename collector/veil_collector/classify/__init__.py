"""Classifier stage: toxicity and identity/bias scores for every stored prompt and response.

Modules, in the order data flows through them:

- ``loader``: finds and loads detoxify checkpoints through detoxify's own loader (by name online, or from
  a folder under ``VEIL_MODELS_DIR`` offline).
- ``toxicity``: :class:`~veil_collector.classify.toxicity.ToxicityClassifier`, our batched inference on the
  model and tokenizer detoxify loaded, and the choice between it and the offline fallback.
- ``fallback``: alt-profanity-check's linear model, used when no detoxify weights can be had.
- ``identity``: the identity-term lexicon (which Jigsaw identity groups a text mentions).
- ``bias_model``: an optional Hugging Face text-classification "bias" model.
- ``fairness``: pure functions for the Jigsaw bias metrics (subgroup, BPSN, BNSP AUC, power mean).
- ``queries``: project-scoped SQL over ``evaluations`` and ``feedback``.
- ``stage``: :class:`~veil_collector.classify.stage.ClassifierStage`, the pipeline listener and worker.

This package imports nothing heavy at import time: the inference modules need only torch, transformers
and detoxify (so ``bench/classify.py`` runs on a machine without ClickHouse or FastAPI), and the stage
imports torch only when it starts.
"""
