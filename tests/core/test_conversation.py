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
