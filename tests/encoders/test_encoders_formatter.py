"""ConversationFormatter order and truncation; bad conversations get clear errors."""

from __future__ import annotations

import pytest

from convsparse.errors import InvalidConversationError


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


def _conv(*texts):
    roles = ["user", "assistant"]
    turns = [{"role": roles[i % 2], "text": t} for i, t in enumerate(texts)]
    assert turns[-1]["role"] == "user"
    return turns


def test_current_turn_first_then_newest_first(tokenizer):
    from convsparse.encoders.formatter import ConversationFormatter

    f = ConversationFormatter(tokenizer, 128)
    out = f.format(_conv("apples are red", "bananas are yellow", "cherries are dark"))
    assert out.turns_used == 3
    assert out.input_ids[0] == tokenizer.cls_token_id and out.input_ids[-1] == tokenizer.sep_token_id
    assert out.text == "[CLS] cherries are dark [SEP] bananas are yellow [SEP] apples are red [SEP]"
    assert out.input_ids.count(tokenizer.sep_token_id) == 3


def test_truncated_from_the_oldest_end(tokenizer):
    from convsparse.encoders.formatter import ConversationFormatter

    conv = _conv("oldest " * 40, "middle turn here", "current question")
    full = ConversationFormatter(tokenizer, 128).format(conv)
    short = ConversationFormatter(tokenizer, 16).format(conv)
    assert len(short.input_ids) <= 16 and len(full.input_ids) > 16
    assert short.text.startswith("[CLS] current question [SEP] middle turn here [SEP]")
    assert short.input_ids == full.input_ids[: len(short.input_ids) - 1] + [tokenizer.sep_token_id]
    tiny = ConversationFormatter(tokenizer, 5).format(conv)
    assert tiny.turns_used == 1 and tiny.text == "[CLS] current question [SEP]"


def test_user_only_mode_skips_assistant_turns(tokenizer):
    from convsparse.encoders.formatter import ConversationFormatter

    out = ConversationFormatter(tokenizer, 64, include_assistant=False).format(
        _conv("first ask", "an answer", "second ask"))
    assert out.text == "[CLS] second ask [SEP] first ask [SEP]"


def test_bare_string_is_a_one_turn_conversation(tokenizer):
    from convsparse.encoders.formatter import ConversationFormatter

    assert ConversationFormatter(tokenizer, 32).format("hello world").text == "[CLS] hello world [SEP]"


@pytest.mark.parametrize("bad, message", [
    ([], "no turns"),
    (42, "expected a list of turns"),
    (["just text"], "turn 0 is a str"),
    ([{"role": "robot", "text": "beep"}], "roles allowed"),
    ([{"role": "user", "text": "   "}], "empty"),
    ([{"role": "user"}], "text"),
    ([{"role": "user", "text": 3}], "text"),
    ([{"role": "user", "text": "q"}, {"role": "assistant", "text": "a"}], "last turn"),
])
def test_bad_conversations(tiny_student, bad, message):
    with pytest.raises(InvalidConversationError, match=message):
        tiny_student.formatter.format(bad)


def test_bad_conversation_in_a_batch_names_its_id(tiny_student):
    good = [{"role": "user", "text": "fine"}]
    with pytest.raises(InvalidConversationError, match="conv-2"):
        tiny_student.encode_conversations([good, []], ids=["conv-1", "conv-2"])
