"""Tiny, randomly initialised MusicGen models saved in transformers' real on-disk format.

Each builder writes what ``MusicgenForConditionalGeneration.from_pretrained(folder,
local_files_only=True)`` (or the melody class) reads: ``config.json``, the weights,
``generation_config.json``, and the text side (a word-level tokenizer built with
``tokenizers``, so nothing is downloaded) plus the feature extractor's
``preprocessor_config.json``. The models are a few hundred kB and generate in
milliseconds per step.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

_WORD_LIST = (
    "<pad> </s> <unk> a an and the with of in on for at by to slow fast calm happy sad dark "
    "bright upbeat lofi jazz rock pop folk blues funk metal techno house ambient electronic "
    "orchestral cinematic epic classical acoustic 80s 90s piano guitar bass drums synth strings "
    "violin cello flute choir vocals beat melody music song loop groove chill relaxing energetic "
    "hip hop reggae dance trance dubstep"
)
WORDS = tuple(_WORD_LIST.split())
FRAME_HOP = (8, 5, 4, 4)  # EnCodec upsampling ratios: 640 samples per frame, 50 frames/s at 32 kHz
SAMPLE_RATE = 32000
CODEBOOK_SIZE = 64  # also the decoder's vocabulary; pad/bos id = this value
NUM_CODEBOOKS = 4


def word_tokenizer():
    """A word-level T5-like tokenizer over ``WORDS`` (lowercase, whitespace split,
    ``</s>`` appended): no download (bench/generation.py uses it too)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {word: i for i, word in enumerate(WORDS)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    # Like T5: every text ends with </s>, so an empty prompt is one token, not zero.
    core.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", vocab["</s>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=512,
    )


def _sub_configs(*, stereo: bool = False):
    from transformers import EncodecConfig, T5Config

    text = T5Config(
        vocab_size=len(WORDS),
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=1,
        num_heads=2,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    # The codec must give exactly the decoder's number of codebooks per channel, or audio
    # prompts fail: 1.2 kbps at 50 frames/s with 6-bit codes (64 entries) is 4 codebooks.
    # (The released models: 2.2 kbps with 11-bit codes, also 4.)
    audio = EncodecConfig(
        target_bandwidths=[1.2],
        sampling_rate=SAMPLE_RATE,
        audio_channels=1,
        num_filters=4,
        hidden_size=16,
        upsampling_ratios=list(FRAME_HOP),
        codebook_size=CODEBOOK_SIZE,
        codebook_dim=16,
        num_lstm_layers=1,
        use_causal_conv=False,  # as in facebook/encodec_32khz
        normalize=False,
        chunk_length_s=None,
        overlap=None,
    )
    return text, audio, (2 * NUM_CODEBOOKS if stereo else NUM_CODEBOOKS)


def _shape_codec(model, seed: int) -> None:
    """Make the random EnCodec behave like a codec: every code matters, output at a sane level.

    Its codebooks start as zeros (every code would decode the same), and with random
    biases the decoded audio is mostly a code-independent pattern. Fill the codebooks,
    zero the decoder's biases (silence in, silence out), smooth the last layer a little
    and scale it so random codes decode to a standard deviation of about 0.1.
    """
    generator = torch.Generator().manual_seed(seed + 1000)
    codec = model.audio_encoder
    with torch.no_grad():
        for layer in codec.quantizer.layers:
            book = layer.codebook
            book.embed.copy_(torch.randn(book.embed.shape, generator=generator))
            book.embed_avg.copy_(book.embed)
        for name, param in codec.decoder.named_parameters():
            if name.endswith("bias") or ".bias_" in name:
                param.zero_()
        last = codec.decoder.layers[-1].conv.parametrizations.weight
        last.original1.abs_()
        codes = torch.randint(0, CODEBOOK_SIZE, (1, 1, NUM_CODEBOOKS, 100), generator=generator)
        level = codec.decode(codes, [None]).audio_values.std()
        last.original0.mul_(0.1 / level)


def _decoder_kwargs(num_codebooks: int, stereo: bool) -> dict:
    return {
        "vocab_size": CODEBOOK_SIZE,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "ffn_dim": 64,
        "num_codebooks": num_codebooks,
        "audio_channels": 2 if stereo else 1,
        "pad_token_id": CODEBOOK_SIZE,
        "bos_token_id": CODEBOOK_SIZE,
        # Weights 15x the default scale: with the default the random decoder's logits hardly
        # depend on the text or melody, so different conditions sampled the same tokens.
        "initializer_factor": 0.3,
    }


def _generation_config(model) -> None:
    gen = model.generation_config
    gen.do_sample = True
    gen.guidance_scale = 3.0
    gen.max_length = 1500
    gen.pad_token_id = CODEBOOK_SIZE
    gen.decoder_start_token_id = CODEBOOK_SIZE
    gen.bos_token_id = CODEBOOK_SIZE


def _save_random_model(folder: Path, model_class: Any, config: Any, seed: int) -> Path:
    """``model_class(config)`` with seeded random weights, its codec shaped and
    its generation settings as the real checkpoints have them, saved in ``folder``."""
    torch.manual_seed(seed)
    model = model_class(config).eval()
    _shape_codec(model, seed)
    _generation_config(model)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    return folder


def build_tiny_musicgen(folder: Path, *, seed: int = 0, stereo: bool = False) -> Path:
    """A tiny text-to-music model (T5 encoder, 32 kHz EnCodec, 2-layer decoder) in ``folder``."""
    from transformers import (
        EncodecFeatureExtractor,
        MusicgenConfig,
        MusicgenDecoderConfig,
        MusicgenForConditionalGeneration,
        MusicgenProcessor,
    )

    text, audio, codebooks = _sub_configs(stereo=stereo)
    decoder = MusicgenDecoderConfig(**_decoder_kwargs(codebooks, stereo))
    config = MusicgenConfig(
        text_encoder=text,
        audio_encoder=audio,
        decoder=decoder,
        decoder_start_token_id=CODEBOOK_SIZE,
        pad_token_id=CODEBOOK_SIZE,
    )
    folder = _save_random_model(folder, MusicgenForConditionalGeneration, config, seed)
    processor = MusicgenProcessor(
        feature_extractor=EncodecFeatureExtractor(
            feature_size=2 if stereo else 1, sampling_rate=SAMPLE_RATE
        ),
        tokenizer=word_tokenizer(),
    )
    processor.save_pretrained(folder)
    return folder


# What MusicgenMelodyFeatureExtractor (30 s chunks, 16384-point STFT, hop 4096) saves. It
# cannot be instantiated without torchaudio, so its configuration is written as JSON.
MELODY_FEATURES = {
    "feature_extractor_type": "MusicgenMelodyFeatureExtractor",
    "processor_class": "MusicgenMelodyProcessor",
    "feature_size": 12,
    "sampling_rate": SAMPLE_RATE,
    "hop_length": 4096,
    "chunk_length": 30,
    "n_fft": 16384,
    "n_samples": 30 * SAMPLE_RATE,
    "num_chroma": 12,
    "padding_side": "right",
    "padding_value": 0.0,
    "return_attention_mask": False,
    "stem_indices": [3, 2],
}


def build_tiny_musicgen_melody(folder: Path, *, seed: int = 0) -> Path:
    """A tiny melody-conditioned model (chroma 12 x 235 frames) in ``folder``."""
    from transformers import (
        MusicgenMelodyConfig,
        MusicgenMelodyDecoderConfig,
        MusicgenMelodyForConditionalGeneration,
    )

    text, audio, codebooks = _sub_configs()
    decoder = MusicgenMelodyDecoderConfig(**_decoder_kwargs(codebooks, False))
    config = MusicgenMelodyConfig(
        text_encoder=text,
        audio_encoder=audio,
        decoder=decoder,
        num_chroma=12,
        chroma_length=235,
        decoder_start_token_id=CODEBOOK_SIZE,
        pad_token_id=CODEBOOK_SIZE,
    )
    folder = _save_random_model(folder, MusicgenMelodyForConditionalGeneration, config, seed)
    word_tokenizer().save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(MELODY_FEATURES, indent=2))
    return folder
