"""A word-level prompt tokenizer that needs no download, saved with the model.

The prompt grammar has a small closed vocabulary (sex, age bins, BMI classes, diagnoses), so a
word-level vocabulary built from it and from the training prompts is exact and tiny. Words it
has never seen map to an unknown token with a warning instead of failing.
"""

from __future__ import annotations

import re
import warnings
from typing import Iterable, Sequence

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from cardiofair.prompts import BMI_CLASSES, SEXES

PAD, UNK, BOS, EOS = "[PAD]", "[UNK]", "[BOS]", "[EOS]"
SPECIAL_TOKENS = (PAD, UNK, BOS, EOS)

# Words every model knows, so counterfactual prompts (a cell absent from training) still
# tokenise: the grammar's fixed words, the age decades of adult cohorts, the WHO classes.
GRAMMAR_WORDS = ("age", "in", "bmi", ",", "-", "healthy", "heart", "failure") + tuple(s.lower() for s in SEXES) \
    + tuple(f"{d}s" for d in range(0, 110, 10)) + BMI_CLASSES

_SPLIT = re.compile(r"\w+|[^\w\s]")


def prompt_words(prompt: str) -> list[str]:
    """The words of a prompt as the tokenizer splits them (lower case, punctuation apart)."""
    return _SPLIT.findall(prompt.lower())


def build_prompt_tokenizer(prompts: Iterable[str], max_length: int = 24) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over the grammar words and every word of ``prompts``."""
    words = sorted(set(GRAMMAR_WORDS) | {w for p in prompts for w in prompt_words(p)})
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS + tuple(words))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}", special_tokens=[(BOS, vocab[BOS]), (EOS, vocab[EOS])]
    )
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token=PAD, unk_token=UNK, bos_token=BOS,
                                   eos_token=EOS, model_max_length=max_length)


def tokenize(tokenizer: PreTrainedTokenizerFast, prompts: Sequence[str]):
    """Token ids (padded to the model length), warning once per word a word-level tokenizer lacks
    (a BPE tokenizer such as Stable Diffusion's spells any word)."""
    vocab = tokenizer.get_vocab()
    unknown = sorted({w for p in prompts for w in prompt_words(p) if w not in vocab}) if UNK in vocab else []
    if unknown:
        warnings.warn(f"prompt words unknown to the model's tokenizer are ignored as {UNK}: {unknown}", stacklevel=2)
    return tokenizer(list(prompts), padding="max_length", truncation=True, max_length=tokenizer.model_max_length,
                     return_tensors="pt").input_ids
