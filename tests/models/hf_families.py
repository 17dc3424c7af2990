"""Tiny Hugging Face models of three families and their tokenizers, built offline from
configs (never downloaded), for tests/models/test_hf_families.py.

Two tokenizers, each trained on the chat file's own text, in the two styles these families
ship (a model is saved with either, as models that share a tokenizer are distilled):

- `chatml`: byte-level BPE (GPT-2's and Qwen2's kind) with Qwen2's chat template,
  `<|im_start|>role\ncontent<|im_end|>\n`; eos `<|im_end|>`, pad `<|endoftext|>`, no bos;
- `llama`: SentencePiece-style BPE (Metaspace `▁`, byte fallback) with Llama 2's template,
  `<s>[INST] <<SYS>>...<</SYS>> user [/INST] answer </s>` (a system message folded into the
  first user turn); bos `<s>`, eos `</s>`, no pad;
- `unsplittable`: `chatml` with a template that renders the assistant's turns under another
  header than its generation prompt, so no answer follows the prompt (refused);
- `no_eos`: `chatml` whose eos is `<|endoftext|>`, which the template never writes (as in
  Qwen2's base models).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
LLAMA = (
    "{% if messages[0]['role'] == 'system' %}"
    "{% set system = '<<SYS>>\n' + messages[0]['content'] + '\n<</SYS>>\n\n' %}"
    "{% set messages = messages[1:] %}{% else %}{% set system = '' %}{% endif %}"
    "{% for m in messages %}{% if m['role'] == 'user' %}"
    "{{ bos_token + '[INST] ' + (system if loop.first else '') + m['content'] + ' [/INST]' }}"
    "{% else %}{{ ' ' + m['content'] + ' ' + eos_token }}{% endif %}{% endfor %}"
)
UNSPLITTABLE = (
    "{% for m in messages %}<|im_start|>{{ 'bot' if m['role'] == 'assistant' else m['role'] }}"
    "\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
TEMPLATES = {"chatml": CHATML, "llama": LLAMA, "unsplittable": UNSPLITTABLE, "no_eos": CHATML}

NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]


def chats(count: int = 40, seed: int = 0) -> list[dict]:
    """`count` short conversations: one or two questions, each answered, and a system
    message in every third."""
    draw = random.Random(seed)
    lines = []
    for index in range(count):
        messages = []
        if index % 3 == 0:
            messages.append({"role": "system", "content": "you answer in words"})
        for _ in range(1 + index % 2):
            a, b = draw.randrange(6), draw.randrange(6)
            messages.append({"role": "user", "content": f"what is {NUMBERS[a]} plus {NUMBERS[b]}"})
            messages.append({"role": "assistant", "content": f"it is {NUMBERS[a + b]}"})
        lines.append({"messages": messages})
    return lines


def write_chats(path: Path, count: int = 40) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in chats(count)))
    return path


def tokenizer(style: str = "chatml"):
    """A tokenizer of `style` (see the module's docstring) with its chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    text = [m["content"] for line in chats() for m in line["messages"]]
    text += ["user\n assistant\n system\n [INST] [/INST] <<SYS>>\n \n<</SYS>>\n\n"] * 50
    if style == "llama":
        special = ["<unk>", "<s>", "</s>"] + [f"<0x{byte:02X}>" for byte in range(256)]
        bpe = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
        bpe.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first")
        bpe.decoder = decoders.Sequence(
            [decoders.Metaspace(prepend_scheme="first"), decoders.ByteFallback(), decoders.Fuse()]
        )
        alphabet = []
    else:
        special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        bpe = Tokenizer(models.BPE())
        bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        bpe.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=special, initial_alphabet=alphabet, show_progress=False
    )
    bpe.train_from_iterator(text, trainer)
    if style == "llama":
        tokens = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    else:
        eos = "<|endoftext|>" if style == "no_eos" else "<|im_end|>"
        tokens = {"eos_token": eos, "pad_token": "<|endoftext|>"}
    built = PreTrainedTokenizerFast(tokenizer_object=bpe, **tokens)
    built.chat_template = TEMPLATES[style]
    return built


def save_model(directory: Path, family: str, tokenizer, rows: int | None = None) -> Path:
    """A tiny random `family` (llama, qwen2, gpt2) causal LM for `tokenizer`, with `rows`
    vocabulary rows (default: the tokenizer's), and the tokenizer, in `directory`."""
    import torch
    import transformers

    transformers.logging.disable_progress_bar()  # "Writing model shards" on every save
    torch.manual_seed(0)
    ids = {
        "vocab_size": rows or len(tokenizer),
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    shape = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,  # grouped-query attention, as both families use
        "max_position_embeddings": 128,
    }
    if family == "llama":
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**ids, **shape))
    elif family == "qwen2":
        config = transformers.Qwen2Config(**ids, **shape, tie_word_embeddings=True)
        model = transformers.Qwen2ForCausalLM(config)
    else:
        config = transformers.GPT2Config(**ids, n_positions=128, n_embd=32, n_layer=1, n_head=4)
        model = transformers.GPT2LMHeadModel(config)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
