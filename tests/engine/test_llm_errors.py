"""Bad inputs to ``q35.LLM``, ``generate`` and ``chat`` raise clear errors (and leave the engine clean)."""

import pytest

import qwen35_native as q35


def test_unknown_or_incomplete_model_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="model directory .* does not exist"):
        q35.LLM(str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="not a checkpoint directory .no config.json"):
        q35.LLM(str(tmp_path))
    with pytest.raises(TypeError, match="model must be a checkpoint directory or a Qwen35ForCausalLM"):
        q35.LLM(42)


def test_bad_engine_arguments(tiny_model, tiny_dir):
    with pytest.raises(ValueError, match="tensor_parallel_size=4 does not divide linear_num_key_heads=2"):
        q35.LLM(tiny_dir, tensor_parallel_size=4)    # refused before any worker starts (tests/parallel: the rest)
    with pytest.raises(ValueError, match="tensor_parallel_size > 1 needs a checkpoint directory"):
        q35.LLM(tiny_model, tensor_parallel_size=2)
    with pytest.raises(ValueError, match="tensor_parallel_size must be a positive integer"):
        q35.LLM(tiny_model, tensor_parallel_size=0)
    with pytest.raises(ValueError, match="device, dtype and backend are fixed by a model passed as an object"):
        q35.LLM(tiny_model, device="cpu")
    with pytest.raises(ValueError, match="max_model_len=5000 exceeds the model's max_position_embeddings=4096"):
        q35.LLM(tiny_model, max_model_len=5000)
    with pytest.raises(ValueError, match=r"max_model_len=300 needs more KV cache than there is \(4 blocks x 64"):
        q35.LLM(tiny_model, max_model_len=300, num_blocks=4)  # default block size: 64 tokens
    with pytest.raises(ValueError, match="max_num_seqs must be a positive integer"):
        q35.LLM(tiny_model, max_num_seqs=0)
    with pytest.raises(ValueError, match="gpu_memory_utilization must be in"):
        q35.LLM(tiny_model, gpu_memory_utilization=1.5)
    with pytest.raises(ValueError, match="cuda_graphs=True needs a CUDA device"):
        q35.LLM(tiny_model, cuda_graphs=True)
    with pytest.raises(ValueError, match="max_num_batched_tokens must be >= max_num_seqs=8"):
        q35.LLM(tiny_model, max_num_seqs=8, max_num_batched_tokens=4)


@pytest.mark.parametrize("prompts,error,message", [
    ([[1] * 40], ValueError, r"prompt has 40 tokens but the context holds max_model_len=32"),
    ([[]], ValueError, "prompt is empty"),
    ([[1, 512]], ValueError, r"prompt token ids must be in \[0, vocab_size=512\), got min 1 max 512"),
    ([[1, -1]], ValueError, "prompt token ids must be in"),
    ([[1.5, 2]], TypeError, "token-id prompts must be lists of ints"),
    ([], ValueError, "prompts must be a string, a list of token ids, a dict, or a non-empty list"),
    ([None], TypeError, "a prompt must be a string or a list of token ids"),
    ([{"prompt": 5}], TypeError, "'prompt' must be a string"),
])
def test_bad_prompts(make_llm, prompts, error, message):
    llm = make_llm(max_model_len=32)
    with pytest.raises(error, match=message):
        llm.generate(prompts, q35.SamplingParams(max_tokens=2))


def test_a_bad_prompt_queues_nothing(make_llm):
    llm = make_llm(max_model_len=32)
    with pytest.raises(ValueError, match="prompt has 40 tokens"):
        llm.generate([[1, 2, 3], [1] * 40], q35.SamplingParams(max_tokens=2))
    assert not llm.engine.has_unfinished()
    assert llm.generate([[1, 2, 3]], q35.SamplingParams(temperature=0, max_tokens=2))[0].token_ids


@pytest.mark.parametrize("kwargs,message", [
    ({"temperature": -0.5}, "temperature must be a finite number >= 0"),
    ({"top_p": 0.0}, r"top_p must be in \(0, 1\]"),
    ({"top_k": -2}, "top_k must be an integer >= -1"),
    ({"max_tokens": 0}, "max_tokens must be an integer >= 1"),
    ({"n": 0}, "n must be an integer >= 1"),
    ({"repetition_penalty": 0.0}, "repetition_penalty must be a finite number > 0"),
    ({"min_p": float("nan")}, r"min_p must be in \[0, 1\]"),
])
def test_invalid_sampling_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        q35.SamplingParams(**kwargs)


def test_bad_sampling_params_argument(make_llm):
    llm = make_llm()
    with pytest.raises(ValueError, match=r"one SamplingParams, or a list of one per prompt \(2\)"):
        llm.generate([[1], [2]], [q35.SamplingParams()])
    with pytest.raises(TypeError, match="sampling_params must be SamplingParams"):
        llm.generate([[1]], [{"temperature": 0}])
    no_tok = make_llm(tokenizer=False)
    with pytest.raises(ValueError, match="stop strings need a tokenizer"):
        no_tok.generate([[1, 2]], q35.SamplingParams(stop=["x"]))
    assert not no_tok.engine.has_unfinished()


def test_bad_chat_inputs(make_llm):
    llm = make_llm()
    with pytest.raises(ValueError, match="messages must be a non-empty list of message dicts"):
        llm.chat("hello")
    with pytest.raises(ValueError, match="messages must be a non-empty list of message dicts"):
        llm.chat([])
    image = [{"role": "user", "content": [{"type": "image", "image": "no-such-cat.png"},
                                          {"type": "text", "text": "x"}]}]
    with pytest.raises((ValueError, FileNotFoundError), match="no-such-cat.png"):
        llm.chat(image)
    with pytest.raises(ValueError, match="image part without an image"):
        llm.chat([{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}])
    with pytest.raises(ValueError, match="chat needs a tokenizer"):
        make_llm(tokenizer=False).chat([{"role": "user", "content": "hi"}])
    assert not llm.engine.has_unfinished()
