"""Tiny trained causal LMs (Llama and Qwen2 layouts) with their own byte-level BPE tokenizer: the fixtures of
the fast tests and of checks that need a model with known next-token distributions (scripts/genai_exactness.py)."""

from __future__ import annotations

from pathlib import Path

LM_TEXT = ("the cat sat on the mat . the dog ran to the park . a bird sang in the tree . "
           "we read the book and the cat slept . 1 2 3 4 5 6 7 8 9 10 . def f ( x ) : return x + 1 \n")


def make_tiny_llama(path: Path, layers: int = 3, seed: int = 0, vocab_size: int = 300,
                    tokenizer_text: str = LM_TEXT, train_steps: int = 60, family: str = "llama") -> Path:
    """A tiny causal LM (hidden 64, GQA 4/2 heads) briefly trained on `tokenizer_text`, with a byte-level
    BPE tokenizer trained on the same text. family "llama": tied head, rope base 1e4 (SmolLM2's
    layout); "qwen2": q/k/v biases, untied head, rope base 1e6 (Qwen2.5's)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    path.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([tokenizer_text] * 4, trainer)
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                     unk_token="<|endoftext|>", pad_token="<|im_end|>")
    hf_tok.save_pretrained(path)
    torch.manual_seed(seed)
    config_cls, model_cls, theta = {"llama": (LlamaConfig, LlamaForCausalLM, 1e4),
                                    "qwen2": (Qwen2Config, Qwen2ForCausalLM, 1e6)}[family]
    config = config_cls(vocab_size=len(hf_tok), hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                        tie_word_embeddings=family == "llama", bos_token_id=1, eos_token_id=2, pad_token_id=2,
                        rope_theta=theta)
    model = model_cls(config)
    if train_steps:  # a little language modelling: diverse, confident next-token distributions
        ids = torch.tensor(hf_tok(tokenizer_text * 8)["input_ids"])
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        for _ in range(train_steps):
            starts = torch.randint(0, len(ids) - 33, (16,))
            batch = torch.stack([ids[s:s + 33] for s in starts])
            loss = model(batch[:, :-1], labels=batch[:, :-1]).loss
            opt.zero_grad(), loss.backward(), opt.step()
    model.save_pretrained(path)
    return path
