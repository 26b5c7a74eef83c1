"""Byte-level BPE tokenizer for the miniworld, laid out like OLMo-7B's GPT-NeoX-based one.

OLMo-7B (``allenai_eleuther-ai-gpt-neox-20b-pii-special.json``): id 0 ``<|endoftext|>``, id 1
``<|padding|>``, and the document separator actually written between documents in the
training files is id 50279, the added token ``|||IP_ADDRESS|||`` (the last id). The HF
``special_tokens_map.json`` names ``<|endoftext|>`` (id 0) as EOS at some revisions, so code
that trusts ``tokenizer.eos_token_id`` splits on the wrong id. The miniworld reproduces this
layout on purpose: separator = last id, named ``|||IP_ADDRESS|||``; the tokenizer's own
``eos_token`` is ``<|endoftext|>`` (id 0), exactly the trap users meet on the real files.
"""

from __future__ import annotations

from pathlib import Path

ENDOFTEXT = "<|endoftext|>"
PADDING = "<|padding|>"
SEPARATOR = "|||IP_ADDRESS|||"
PAD_ID = 1


def train_tokenizer(texts: list[str], vocab_size: int, out_dir: str | Path):
    """Train a byte-level BPE on ``texts`` and save an HF tokenizer folder.

    Returns the ``tokenizers.Tokenizer``. ids: 0 ``<|endoftext|>``, 1 ``<|padding|>``,
    ``vocab_size - 1`` = the separator (EOS id of the token files).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - 1, min_frequency=2,
                                  special_tokens=[ENDOFTEXT, PADDING], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    tok.add_special_tokens([SEPARATOR])
    if tok.get_vocab_size() != vocab_size or tok.token_to_id(SEPARATOR) != vocab_size - 1:
        raise RuntimeError(f"tokenizer has {tok.get_vocab_size()} ids, expected {vocab_size}")
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=ENDOFTEXT, pad_token=PADDING,
                                 unk_token=None, model_max_length=1 << 30)
    hf.save_pretrained(str(out_dir))
    return tok
