import pytest

from convsparse.conversation import parse_conversation
from convsparse.errors import InvalidConversationError


@pytest.mark.parametrize(
    "raw, fragment",
    [([], "no turns"), (None, "list of turns"), (42, "list of turns"), (["hi"], "turn 0 is a str"),
     ([{"role": "bot", "text": "x"}], "role"), ([{"role": "user"}], "text"),
     ([{"role": "user", "text": "   "}], "empty"), ([{"role": "user", "text": 3}], "text"),
     ([{"role": "user", "text": "q"}, {"role": "assistant", "text": "a"}], "last turn")],
)
def test_bad_conversations_raise_clear_errors(raw, fragment):
    with pytest.raises(InvalidConversationError, match=fragment) as e:
        parse_conversation(raw, record_id="conv-1")
    assert "conv-1" in str(e.value)


def test_string_and_dict_forms():
    assert parse_conversation("what is splade?")[0].role == "user"
    turns = parse_conversation({"turns": [{"role": "user", "text": "a", "extra": 1}]})
    assert turns[0].text == "a"


# -- issue 12, finding 7: OpenAI / Hugging Face chat messages -----------------------------------

def test_chat_message_format_and_role_rule():
    from convsparse.conversation import parse_conversation

    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "name": "ana", "content": [{"type": "text", "text": "Octopuses?"},
                                                    {"type": "image_url", "image_url": {"url": "x"}}]},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "t1"}]},
        {"role": "tool", "tool_call_id": "t1", "content": "sunny"},
        {"role": "function", "name": "f", "content": "42"},
        {"role": "developer", "content": "be brief"},
        {"role": "assistant", "content": [{"type": "text", "text": "Clever"}, {"type": "text", "text": "animals."}]},
        {"role": "user", "content": "How many hearts?"},
    ]
    turns = parse_conversation(messages)
    assert [(t.role, t.text) for t in turns] == [
        ("user", "Octopuses?"), ("assistant", "Clever\nanimals."), ("user", "How many hearts?")]
    assert parse_conversation({"messages": messages}) == turns
    ours = parse_conversation([{"role": "system", "text": "ctx"}, {"role": "user", "text": "q"}])
    assert [t.role for t in ours] == ["system", "user"]  # our format keeps system turns


@pytest.mark.parametrize("raw, message", [
    ({"turns": "nope"}, '"turns" must be a list of turns'),
    ({"messages": "nope"}, '"messages" must be a list of turns'),
    ({"role": "user", "text": "hi"}, "wrap a single turn in a list"),
    ([{"role": "system", "content": "only instructions"}], "no user or assistant turn left"),
    ([{"role": "user", "content": 5}], "field 'content' is a int"),
])
def test_chat_format_errors(raw, message):
    from convsparse.conversation import parse_conversation
    from convsparse.errors import InvalidConversationError

    with pytest.raises(InvalidConversationError) as e:
        parse_conversation(raw)
    assert message in str(e.value)
