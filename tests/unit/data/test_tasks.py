"""Prompt sources and scorers: arithmetic split, jsonl, datasets, GSM8K, reasoning-gym, sampler order."""

from __future__ import annotations

import json
import time

import pytest

from forge.data import (
    DatasetConfig,
    HubUnreachableError,
    PromptSampler,
    Sample,
    answers_match,
    arithmetic_pairs,
    arithmetic_sample,
    build_dataset,
    extract_final_answer,
    load_gsm8k,
    load_hf,
    load_jsonl,
    parse_gsm8k_answer,
    reasoning_gym_dataset,
    score_response,
)


def test_arithmetic_split_is_deterministic_disjoint_and_complete():
    parts = {s: arithmetic_pairs(s, seed=3) for s in ("sft", "rl", "test")}
    assert {s: len(p) for s, p in parts.items()} == {"sft": 4000, "rl": 3000, "test": 3000}
    sets = {s: set(p) for s, p in parts.items()}
    assert not (sets["sft"] & sets["rl"]) and not (sets["sft"] & sets["test"]) and not (sets["rl"] & sets["test"])
    assert sets["sft"] | sets["rl"] | sets["test"] == {(a, b) for a in range(100) for b in range(100)}
    assert arithmetic_pairs("test", seed=3) == parts["test"]  # same seed, same order
    assert set(arithmetic_pairs("test", seed=4)) != sets["test"]
    ds = build_dataset(DatasetConfig(source="arithmetic", split="test", seed=3, max_samples=1000))
    a, b = parts["test"][0]
    assert len(ds) == 1000 and ds[0].prompt == f"{a:02d}+{b:02d}=" and ds[0].target == str(a + b)
    assert build_dataset(DatasetConfig(source="arithmetic", split="sft"))[0].prompt[2] == "+"
    s = Sample("07+42=", "49", {"task": "exact"})
    assert score_response("49", s) == 1.0 and score_response(" 49\n", s) == 1.0
    assert score_response("48", s) == 0.0 and score_response("49 ", s) == 1.0 and score_response("490", s) == 0.0
    with pytest.raises(ValueError, match="unknown arithmetic split 'train'"):
        arithmetic_pairs("train")


def test_digits_scorer_gives_partial_credit_per_aligned_digit():
    d = Sample("57+68=", "125", {"task": "digits"})
    # by hand: exact 1; same length, k of 3 digits right from the units end -> 0.5 * k / 3; other lengths 0
    assert score_response("125", d) == 1.0 and score_response(" 125\n", d) == 1.0
    assert score_response("124", d) == pytest.approx(0.5 * 2 / 3)
    assert score_response("135", d) == pytest.approx(0.5 * 2 / 3)
    assert score_response("025", d) == pytest.approx(0.5 * 2 / 3)
    assert score_response("999", d) == 0.0 and score_response("25", d) == 0.0 and score_response("1250", d) == 0.0
    assert score_response("", d) == 0.0
    rl = build_dataset(DatasetConfig(source="arithmetic", split="rl", scorer="digits", max_samples=3))
    held_out = build_dataset(DatasetConfig(source="arithmetic", split="test", scorer="numeric", max_samples=3))
    assert {s.task for s in rl} == {"digits"} and {s.task for s in held_out} == {"exact"}
    with pytest.raises(ValueError, match="'exact' or 'digits'"):
        arithmetic_sample(1, 2, scorer="numeric")


def test_final_answer_extraction_and_matching():
    assert parse_gsm8k_answer("He pays 3*400=<<3*400=1200>>1200.\n#### 1,200") == "1200"
    with pytest.raises(ValueError, match="no '#### N'"):
        parse_gsm8k_answer("no final line")
    assert extract_final_answer("so \\boxed{\\frac{1}{2}} done") == "\\frac{1}{2}"
    assert extract_final_answer("<answer> 42 </answer> and 7") == "42"
    assert extract_final_answer("steps... #### 18\nbye") == "18"
    assert extract_final_answer("3 apples and then 5 more makes 8.") == "8"
    assert extract_final_answer("no digits") is None
    assert answers_match("1,200.0", "1200") and answers_match("$18", "18") and not answers_match("17", "18")
    assert answers_match("0.5", "1/2")


def test_gsm8k_jsonl_fixture(tmp_path):
    rows = [
        {"question": "Tom has 3 boxes of 400 pens. How many pens?", "answer": "3*400=1200\n#### 1,200"},
        {"question": "What is 9 + 9?", "answer": "9+9=18\n#### 18"},
    ]
    path = tmp_path / "gsm8k_train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ds = load_gsm8k(str(path))
    assert [s.target for s in ds] == ["1200", "18"] and ds[1].prompt == "What is 9 + 9?"
    assert ds[0].metadata["solution"].endswith("#### 1,200")
    assert score_response("3 boxes of 400 is 1200 pens. #### 1200", ds[0]) == 1.0
    assert score_response("The answer is \\boxed{1,200}", ds[0]) == 1.0
    assert score_response("It is 1201", ds[0]) == 0.0 and score_response("I don't know", ds[0]) == 0.0
    cfg_ds = build_dataset(DatasetConfig(source="gsm8k", path=str(path), split="train"))
    assert [s.target for s in cfg_ds] == ["1200", "18"]


def test_jsonl_plain_and_chat_rows_and_errors(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text(json.dumps({"q": "2+2?", "a": 4}) + "\n\n" + json.dumps({"messages": [
        {"role": "system", "content": "be brief"}, {"role": "user", "content": "3+3?"},
        {"role": "assistant", "content": "6"}]}) + "\n")
    ds = load_jsonl(p, prompt_key="q", target_key="a")
    assert ds[0] == Sample("2+2?", "4", {"task": "numeric", "source": str(p), "index": 0})
    assert ds[1].prompt == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "3+3?"}]
    assert ds[1].target == "6"
    with pytest.raises(KeyError, match=r"row 0 has no key\(s\) \['prompt', 'answer'\]; its keys are \['a', 'q'\]"):
        load_jsonl(p)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "x", "answer": "1"}\n{"prompt": oops}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: not valid JSON"):
        load_jsonl(bad)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_jsonl(tmp_path / "missing.jsonl")


def test_hf_datasets_local_file_dir_and_offline_hub(tmp_path, monkeypatch):
    import datasets

    csv = tmp_path / "d.csv"
    csv.write_text("prompt,answer\n1+1=,2\n2+5=,7\n")
    ds = load_hf(str(csv), task="exact")
    assert [(s.prompt, s.target) for s in ds] == [("1+1=", "2"), ("2+5=", "7")]
    saved = tmp_path / "saved"
    datasets.DatasetDict({"test": datasets.Dataset.from_dict({"question": ["a?"], "answer": ["x #### 5"]})}
                         ).save_to_disk(str(saved))
    ds = load_hf(str(saved), split="test", prompt_key="question")
    assert ds[0].target == "x #### 5" and score_response("5", ds[0]) == 1.0
    with pytest.raises(KeyError, match=r"has splits \['test'\], not 'train'"):
        load_hf(str(saved), split="train")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    with pytest.raises(HubUnreachableError, match="hub is not reachable"):
        load_hf("openai/gsm8k", subset="main")
    with pytest.raises(HubUnreachableError, match="'openai/gsm8k'"):
        load_gsm8k("openai/gsm8k")
    assert time.perf_counter() - t0 < 4.0  # no retry loop (datasets alone retries for ~25 s)


def test_reasoning_gym_tasks_score_like_reasoning_gym():
    import reasoning_gym

    for task in ("basic_arithmetic", "chain_sum", "gsm_symbolic", "countdown"):
        ds = reasoning_gym_dataset(task, size=4, seed=5)
        ref = reasoning_gym.create_dataset(task, size=4, seed=5)  # independent: reasoning-gym's own generator
        for i, s in enumerate(ds):
            assert s.prompt[1]["content"] == ref[i]["question"] and s.target == str(ref[i]["answer"])
            assert s.prompt[0]["role"] == "system" and "<answer>" in s.prompt[0]["content"]
            good = f"I think.\n<answer>{ref[i]['answer']}</answer>"
            assert score_response(good, s) == ref.score_answer(ref[i]["answer"], ref[i]) == 1.0
            assert score_response("<answer>-123456789</answer>", s) == ref.score_answer("-123456789", ref[i])
            assert score_response("<answer>-123456789</answer>", s) < 0.5
    test = reasoning_gym_dataset("basic_arithmetic", size=4, seed=5, split="test")
    assert [s.target for s in test] != [s.target for s in reasoning_gym_dataset("basic_arithmetic", size=4, seed=5)]
    with pytest.raises(ValueError, match="close task names: \\['basic_arithmetic'"):
        reasoning_gym_dataset("basic_arithmetc", size=2)


def test_prompt_sampler_epochs_and_resume():
    s = PromptSampler(5, seed=7)
    first = [s.next_index() for _ in range(12)]
    assert sorted(first[:5]) == sorted(first[5:10]) == [0, 1, 2, 3, 4] and first[:5] != first[5:10]
    s2 = PromptSampler(5, seed=7)
    for _ in range(7):
        s2.next_index()
    state = s2.state_dict()
    s3 = PromptSampler(5, seed=7)
    s3.load_state_dict(state)
    assert [s3.next_index() for _ in range(5)] == first[7:12]
    with pytest.raises(ValueError, match=r"state is for \(num_items, seed, shuffle\)=\(5, 7, True\)"):
        PromptSampler(6, seed=7).load_state_dict(state)
    assert [i for _, i in zip(range(6), PromptSampler(3, shuffle=False))] == [0, 1, 2, 0, 1, 2]


def test_dataset_config_errors():
    with pytest.raises(ValueError, match="chat_template: true needs tokenizer"):
        DatasetConfig(chat_template=True)
    with pytest.raises(ValueError, match="'jsonl' needs a path"):
        DatasetConfig(source="jsonl")
