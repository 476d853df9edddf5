"""Fixtures for the metric tests: a tiny random-weight CLAP saved locally (never downloaded)."""

from __future__ import annotations

import pytest

SENTENCES = ["a happy piano melody", "sad violin with drums", "electronic dance music at 128 bpm",
             "ambient pads and soft strings", "a loud rock guitar riff"]


def make_clap_with_processor(directory, sample_rate: int = 16000, max_length_s: int = 2, seed: int = 0) -> str:
    """Save a tiny ``ClapModel`` + ``ClapProcessor`` (BPE tokenizer, 16-band feature extractor)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor, RobertaTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(SENTENCES, trainer)
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    tokenizer = RobertaTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", sep_token="</s>",
                                     cls_token="<s>", unk_token="<unk>", pad_token="<pad>", mask_token="<mask>",
                                     model_max_length=64)
    config = ClapConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=37, max_position_embeddings=66, projection_dim=16),
        audio_config=dict(window_size=4, num_mel_bins=16, spec_size=64, patch_stride=2, hidden_size=32,
                          patch_embeds_hidden_size=16, projection_dim=16, depths=[1, 1], num_attention_heads=[2, 2],
                          num_hidden_layers=2),
        projection_dim=16)
    torch.manual_seed(seed)
    ClapModel(config).save_pretrained(directory)
    fe = ClapFeatureExtractor(feature_size=16, sampling_rate=sample_rate, hop_length=sample_rate // 100,
                              max_length_s=max_length_s, fft_window_size=400, frequency_max=sample_rate // 2,
                              truncation="rand_trunc")
    ClapProcessor(feature_extractor=fe, tokenizer=tokenizer).save_pretrained(directory)
    return str(directory)


@pytest.fixture(scope="session")
def tiny_clap_dir(tmp_path_factory) -> str:
    """Directory of a tiny random CLAP with its processor (16 kHz, 2 s windows)."""
    return make_clap_with_processor(tmp_path_factory.mktemp("tiny_clap"))
