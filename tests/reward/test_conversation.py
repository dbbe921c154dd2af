"""The conversation format: validation, the stored key, and the fallback for checkpoints without a
chat template (a reward model then scores the plain rendering of every turn)."""

from pathlib import Path

from reward.conversation import check_messages, conversation_key, render_plain
from reward.score import encode

THREE = [
    {"role": "user", "content": "I want a pet."},
    {"role": "assistant", "content": "Cat or dog?"},
    {"role": "user", "content": "A cat."},
]


def test_validation_names_the_turn_and_what_is_valid() -> None:
    assert check_messages(THREE) == []
    assert check_messages(THREE[:2]) == [
        "messages: the conversation must end with a user turn (the one the candidates answer)"
    ]
    assert "unknown role 'tool'" in check_messages([{"role": "tool", "content": "x"}])[0]
    assert "out of turn" in check_messages([THREE[0], THREE[0]])[0]
    assert "non-empty text" in check_messages([{"role": "user", "content": ""}])[0]


def test_key_is_the_text_for_one_message_and_the_whole_conversation_otherwise() -> None:
    assert conversation_key(THREE[:1]) == "I want a pet."
    assert conversation_key(THREE) != conversation_key(
        [THREE[0], THREE[1], {"role": "user", "content": "A dog."}]
    )
    assert conversation_key(THREE).startswith('[{"role":"user"')


def test_plain_rendering_without_a_chat_template(tiny_model: Path) -> None:
    from transformers import AutoTokenizer

    assert render_plain(THREE[:1], "Cats purr.") == "I want a pet.\n\nCats purr."  # as before conversations
    assert render_plain(THREE, "Cats purr.") == (
        "User: I want a pet.\n\nAssistant: Cat or dog?\n\nUser: A cat.\n\nAssistant: Cats purr."
    )
    tok = AutoTokenizer.from_pretrained(tiny_model)
    with_template = encode(tok, THREE, "Cats purr.", 512)
    tok.chat_template = None
    plain = encode(tok, THREE, "Cats purr.", 512)
    assert plain != with_template
    assert tok.decode(plain, skip_special_tokens=True).replace(" ", "").startswith("User:Iwantapet.")
