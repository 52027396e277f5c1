"""Small page-kit helpers every page uses."""
from __future__ import annotations

from components.page_kit import prompt_label

CHAT = ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM<|im_end|>\n<|im_start|>user\n"
        "What is the capital of France?<|im_end|>\n<|im_start|>assistant\n")


def test_a_prompt_label_shows_line_breaks_and_keeps_both_ends_of_a_long_chat_prompt():
    label = prompt_label(3, CHAT)
    assert label.startswith("3: <|im_start|>system↵") and label.endswith("<|im_start|>assistant↵")
    assert "What is the capital of France?" in label and "\n" not in label and len(label) <= 3 + 96
    other = prompt_label(4, CHAT.replace("France", "Peru"))
    assert other != label  # two chat prompts with the same system turn stay distinguishable


def test_a_short_prompt_is_kept_whole_with_its_spaces():
    assert prompt_label(1, "  The capital of France is") == "1:   The capital of France is"
