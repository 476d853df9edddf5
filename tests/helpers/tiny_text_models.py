"""Tiny random-weight T5 and CLAP models with locally trained tokenizers, for tests.

Nothing is downloaded: a tokenizer is trained with the ``tokenizers`` library on a handful of
music prompts and wrapped in the ``transformers`` class the real checkpoint uses
(``T5TokenizerFast`` / ``RobertaTokenizerFast``); the model is built from a small config with
random weights. Both are written with ``save_pretrained`` so they load exactly like a local copy
of google-t5/t5-base or laion/clap-htsat-unfused.
"""

from __future__ import annotations

from pathlib import Path

import torch

SENTENCES = [
    "a calm piano melody with soft strings",
    "energetic drums and deep bass, 128 bpm",
    "ambient synth pad, slow and dreamy",
    "rock guitar riff with distorted vocals",
    "Genre: jazz | Instruments: saxophone, double bass | Moods: relaxed",
    "lofi hip hop beat for studying",
    "orchestral film score, epic brass and choir",
    "sine tone at 440 hz with noise",
] * 4


def make_tiny_t5(directory: str | Path, d_model: int = 32, seed: int = 0) -> str:
    """Save a random 2-layer T5 encoder-decoder (width ``d_model``) and a Unigram tokenizer.

    Returns:
        The directory, usable as ``model_name`` / ``MUSICDIFF_T5_PATH``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import T5Config, T5EncoderModel, T5TokenizerFast

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=120, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>"
    )
    tok.train_from_iterator(SENTENCES, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", 1)]
    )
    tokenizer = T5TokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", extra_ids=0
    )
    tokenizer.save_pretrained(directory)
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=d_model,
        d_kv=8,
        d_ff=2 * d_model,
        num_layers=2,
        num_heads=4,
        pad_token_id=0,
        eos_token_id=1,
    )
    torch.manual_seed(seed)
    T5EncoderModel(config).save_pretrained(directory)
    return str(directory)


def make_tiny_clap(
    directory: str | Path, hidden_size: int = 32, projection_dim: int = 16, seed: int = 0
) -> str:
    """Save a random tiny ``ClapModel`` (text + audio towers) and a byte-level BPE tokenizer.

    Returns:
        The directory, usable as ``model_name`` / ``MUSICDIFF_CLAP_PATH``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import ClapConfig, ClapModel, RobertaTokenizerFast

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(SENTENCES, trainer)
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    tokenizer = RobertaTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
    )
    tokenizer.save_pretrained(directory)
    text_config = dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=2 * hidden_size,
        max_position_embeddings=96,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    )
    audio_config = dict(
        spec_size=64,
        hidden_size=32,
        patch_embeds_hidden_size=8,
        depths=[1, 1],
        num_attention_heads=[2, 2],
        window_size=4,
        num_mel_bins=16,
        patch_size=4,
        patch_stride=[4, 4],
    )
    config = ClapConfig(
        text_config=text_config, audio_config=audio_config, projection_dim=projection_dim
    )
    torch.manual_seed(seed)
    ClapModel(config).save_pretrained(directory)
    return str(directory)
