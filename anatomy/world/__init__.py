"""The miniworld: a miniature, fully known pretraining run (corpus, tokenizer, OLMo-layout
token files and data order, an OLMo-architecture model with checkpoints, pools, truth)."""
