"""The demo world and its scripts: the synthetic world (world), the built-in prompt sets written from it (prompts),
the demo tokenizers (tokenizer), the script that trains the demo zoo (train), the real model's prompt sets and LoRA
data (real_sets) and the script that trains its grumpy LoRA (train_lora)."""
__all__ = ["prompts", "real_sets", "tokenizer", "train", "train_lora", "world"]
