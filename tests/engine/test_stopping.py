"""Stop handling (stop ids, eos, ignore_eos, stop strings, max_tokens, finish reasons, streaming text) and the
incremental detokenizer on multi-byte characters split across byte-level tokens. Code:
python/qwen35_native/engine/{stopping,detokenizer}.py."""

import pytest

from qwen35_native.engine import IncrementalDetokenizer, SamplingParams, StopChecker, eos_token_ids

TEXTS = ["Hello 世界! Ünïcödé ok", "emoji 🙂🚀 and 𝔘 mixed with ascii", "ça va? 日本語のテキスト", "plain ascii text"]


def _run(checker, ids):
    streamed = []
    for i in ids:
        done = checker.append(i)
        streamed.append(checker.take_new_text())
        if done:
            break
    streamed.append(checker.take_new_text())
    return "".join(streamed), streamed


@pytest.mark.parametrize("text", TEXTS)
def test_incremental_detokenizer_emits_only_complete_text(tokenizer, text):
    ids = tokenizer.encode(text)
    assert len(ids) > len(text.encode("utf-8")) // 2  # the tiny vocab really splits multi-byte characters
    detok = IncrementalDetokenizer(tokenizer)
    pieces = [detok.step(i) for i in ids] + [detok.flush()]
    assert "".join(pieces) == text == tokenizer.decode(ids)
    assert not any("\ufffd" in p for p in pieces)
    # a character whose bytes are split emits nothing until its last byte arrives
    assert any(p == "" for p in pieces[:-1]) == (not text.isascii())


def test_incremental_detokenizer_skips_special_tokens_and_flushes_incomplete_bytes(tokenizer):
    im_end = tokenizer.token_to_id("<|im_end|>")
    think = tokenizer.token_to_id("<think>")
    ids = [think] + tokenizer.encode("a 世") + [im_end] + tokenizer.encode("b")
    detok = IncrementalDetokenizer(tokenizer)
    text = "".join(detok.step(i) for i in ids) + detok.flush()
    assert text == "<think>a 世b" == tokenizer.decode(ids)
    keep = IncrementalDetokenizer(tokenizer, skip_special_tokens=False)
    assert "".join(keep.step(i) for i in ids) + keep.flush() == "<think>a 世<|im_end|>b"
    partial = tokenizer.encode("x世")[:-1]  # last byte of 世 missing
    detok = IncrementalDetokenizer(tokenizer)
    streamed = "".join(detok.step(i) for i in partial)
    assert streamed == "x" and streamed + detok.flush() == tokenizer.decode(partial)


def test_eos_ids_from_generation_config():
    assert eos_token_ids({"eos_token_id": [7, 8]}, 9) == [7, 8, 9]
    assert eos_token_ids({"eos_token_id": 7}, 7) == [7]
    assert eos_token_ids(None, None) == [] and eos_token_ids({}, 3) == [3]


def test_eos_stops_without_its_text(tokenizer):
    eos = tokenizer.token_to_id("<|im_end|>")
    ids = tokenizer.encode("Answer: 42") + [eos] + tokenizer.encode(" never")
    checker = StopChecker(SamplingParams().resolved(), [eos], tokenizer)
    text, _ = _run(checker, ids)
    assert checker.finish_reason == "stop" and checker.stop_reason is None
    assert text == checker.text == "Answer: 42" and checker.token_ids[-1] == eos


def test_stop_token_ids_and_ignore_eos(tokenizer):
    eos, user_stop = tokenizer.token_to_id("<|im_end|>"), tokenizer.token_to_id("</tool_call>")
    ids = tokenizer.encode("a") + [eos] + tokenizer.encode("b") + [user_stop] + tokenizer.encode("c")
    checker = StopChecker(SamplingParams(ignore_eos=True, stop_token_ids=[user_stop]).resolved(), [eos], tokenizer)
    _run(checker, ids)
    assert checker.finish_reason == "stop" and checker.stop_reason == user_stop
    assert checker.text == "ab" and len(checker.token_ids) == len(ids) - 1
    # include_stop_str_in_output keeps a (non-special) stop token's text
    checker = StopChecker(SamplingParams(stop_token_ids=[user_stop], include_stop_str_in_output=True).resolved(),
                          [eos], tokenizer)
    _run(checker, tokenizer.encode("b") + [user_stop])
    assert checker.text == "b</tool_call>"


def test_max_tokens_and_context_limit(tokenizer):
    ids = tokenizer.encode("one two three four five six seven eight nine ten")
    checker = StopChecker(SamplingParams(max_tokens=5).resolved(), [], tokenizer)
    _run(checker, ids)
    assert checker.finish_reason == "length" and checker.stop_reason is None and len(checker.token_ids) == 5
    assert checker.text == tokenizer.decode(ids[:5])
    checker = StopChecker(SamplingParams(max_tokens=50).resolved(), [], tokenizer, max_new_tokens=3)
    _run(checker, ids)
    assert checker.finish_reason == "length" and len(checker.token_ids) == 3
    with pytest.raises(RuntimeError, match="already finished"):
        checker.append(ids[0])


def test_stop_token_on_last_allowed_step_reports_stop(tokenizer):
    eos = tokenizer.token_to_id("<|endoftext|>")
    checker = StopChecker(SamplingParams(max_tokens=3).resolved(), [eos], tokenizer)
    _run(checker, tokenizer.encode("ab")[:2] + [eos])
    assert len(checker.token_ids) == 3 and checker.finish_reason == "stop"


def test_token_only_stopping_without_tokenizer():
    checker = StopChecker(SamplingParams(max_tokens=4).resolved(), [9])
    assert [checker.append(t) for t in (1, 2, 9)] == [False, False, True]
    assert checker.finish_reason == "stop" and checker.text == "" and checker.token_ids == [1, 2, 9]
    with pytest.raises(ValueError, match="stop strings need a tokenizer"):
        StopChecker(SamplingParams(stop="x").resolved(), [9])


@pytest.mark.parametrize("stop,expected_text,reason", [
    (["three"], "one two ", "three"),
    (["e t"], "on", "e t"),  # spans token boundaries
    (["five", "two"], "one ", "two"),  # the earliest occurrence wins, not the first listed
    (["日本"], "one two three ", "日本"),  # multi-byte stop string across byte tokens
])
def test_stop_strings(tokenizer, stop, expected_text, reason):
    ids = tokenizer.encode("one two three 日本 four five")
    checker = StopChecker(SamplingParams(stop=stop).resolved(), [], tokenizer)
    streamed, pieces = _run(checker, ids)
    assert checker.finish_reason == "stop" and checker.stop_reason == reason
    assert checker.text == expected_text == streamed
    # nothing streamed ever showed part of the stop string
    running = ""
    for piece in pieces:
        running += piece
        assert running == expected_text[:len(running)]


def test_stop_string_included_and_streaming_holdback(tokenizer):
    ids = tokenizer.encode("alpha beta gamma delta")
    checker = StopChecker(SamplingParams(stop=["gamma"], include_stop_str_in_output=True).resolved(), [], tokenizer)
    _run(checker, ids)
    assert checker.text == "alpha beta gamma" and checker.stop_reason == "gamma"
    checker = StopChecker(SamplingParams(stop=["XYZW"], max_tokens=len(ids)).resolved(), [], tokenizer)
    streamed = ""
    for i in ids:
        checker.append(i)
        streamed += checker.take_new_text()
        if not checker.finished:  # the last 3 characters could start "XYZW": held back
            assert streamed == checker.text[:max(0, len(checker.text) - 3)]
    assert checker.finish_reason == "length" and streamed == checker.text == "alpha beta gamma delta"
