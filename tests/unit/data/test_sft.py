"""SFT tokenization (prompt masking), padding, packing (positions, no cross-document targets or attention)."""

from __future__ import annotations

import pytest
import torch

from forge.data import (
    DatasetConfig,
    PromptDataset,
    Sample,
    SFTBatcher,
    SFTExample,
    arithmetic_dataset,
    build_dataset,
    collate_sft,
    pack_sft,
    render_prompt,
    tokenize_sft,
)
from forge.models.tiny import TinyModelSpec, build_byte_tokenizer, build_tiny_model

EOS, PAD = 256, 259  # byte tokenizer: ids 0..255 are bytes, then <|endoftext|>, <|im_start|>, <|im_end|>, <|pad|>
IM_START, IM_END = 257, 258


@pytest.fixture(scope="module")
def tok():
    return build_byte_tokenizer()


def b(text: str) -> list[int]:
    return list(text.encode())


def test_raw_example_masks_the_prompt(tok):
    ex = tokenize_sft(Sample("07+42=", "49"), tok)
    assert ex.tokens == tuple(b("07+42=49") + [EOS])
    assert ex.loss_mask == (0, 0, 0, 0, 0, 0, 1, 1, 1)
    with pytest.raises(ValueError, match="no response token left"):
        tokenize_sft(Sample("07+42=", "49"), tok, max_len=6)


def test_chat_template_rendering_and_chat_masking(tok):
    text = render_prompt(tok, "2+2?", system_prompt="be brief")
    assert text == "<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n"
    ex = tokenize_sft(Sample([{"role": "user", "content": "2+2?"}], "4"), tok, chat_template=True)
    prompt = [IM_START] + b("user\n2+2?") + [IM_END] + b("\n") + [IM_START] + b("assistant\n")
    answer = b("4") + [IM_END] + b("\n")
    assert ex.tokens == tuple(prompt + answer)
    assert ex.loss_mask == tuple([0] * len(prompt) + [1] * len(answer))
    with pytest.raises(TypeError, match="needs chat_template=True"):
        tokenize_sft(Sample([{"role": "user", "content": "x"}], "y"), tok)


def test_chat_dataset_config_renders_prompts(tmp_path, tok):
    tok.save_pretrained(str(tmp_path / "tok"))
    ds = build_dataset(DatasetConfig(source="arithmetic", split="rl", max_samples=2, chat_template=True,
                                     tokenizer=str(tmp_path / "tok")))
    assert ds[0].prompt.startswith("<|im_start|>user\n") and ds[0].prompt.endswith("<|im_start|>assistant\n")


def test_padding_hand_built(tok):
    a = SFTExample((10, 11, 12, 13), (0, 0, 1, 1))
    c = SFTExample((20, 21, 22), (0, 1, 1))
    batch = collate_sft([a, c], pad_id=PAD)
    assert batch.input_ids.tolist() == [[10, 11, 12], [20, 21, PAD]]
    assert batch.target_ids.tolist() == [[11, 12, 13], [21, 22, PAD]]
    assert batch.target_mask.tolist() == [[0, 1, 1], [1, 1, 0]]
    assert batch.position_ids is None


def test_packing_hand_built():
    a = SFTExample((10, 11, 12, 13), (0, 0, 1, 1))  # 3 positions
    c = SFTExample((20, 21, 22), (0, 1, 1))  # 2 positions
    d = SFTExample((30, 31, 32, 33, 34), (0, 0, 0, 1, 1))  # 4 positions
    batch = pack_sft([[a, c], [d]], pad_id=PAD, seq_len=6)
    assert batch.input_ids.tolist() == [[10, 11, 12, 20, 21, PAD], [30, 31, 32, 33, PAD, PAD]]
    # position 2 predicts 13 (end of a), never 20 (start of c): targets stay inside their document
    assert batch.target_ids.tolist() == [[11, 12, 13, 21, 22, PAD], [31, 32, 33, 34, PAD, PAD]]
    assert batch.target_mask.tolist() == [[0, 1, 1, 1, 1, 0], [0, 0, 1, 1, 0, 0]]
    assert batch.position_ids.tolist() == [[0, 1, 2, 0, 1, 0], [0, 1, 2, 3, 0, 1]]
    with pytest.raises(ValueError, match="need 7 positions, more than seq_len=6"):
        pack_sft([[a, d]], pad_id=PAD, seq_len=6)


def test_packed_forward_equals_separate_forwards(tmp_path, tok):
    """position_ids restarts → transformers masks attention per document: packed logits == one-by-one logits."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(build_tiny_model(tmp_path / "m", TinyModelSpec(hidden_size=64)))
    docs = [tokenize_sft(Sample(p, t), tok) for p, t in [("07+42=", "49"), ("99+99=", "198"), ("1+1=", "2")]]
    batch = pack_sft([docs], pad_id=PAD, seq_len=32)
    with torch.no_grad():
        packed = model(input_ids=batch.input_ids, position_ids=batch.position_ids, use_cache=False).logits[0]
        start = 0
        for doc in docs:
            n = doc.num_positions
            alone = model(input_ids=torch.tensor([doc.tokens[:-1]])).logits[0]
            assert torch.allclose(packed[start : start + n], alone, atol=1e-5)
            start += n
        # and without position_ids the second document would see the first (the check above is not vacuous)
        leaky = model(input_ids=batch.input_ids, use_cache=False).logits[0]
        n0 = docs[0].num_positions
        assert not torch.allclose(leaky[n0 : n0 + docs[1].num_positions], packed[n0 : n0 + docs[1].num_positions])


def test_batcher_packs_whole_documents_and_resumes(tok):
    ds = arithmetic_dataset("sft", seed=0, max_samples=50)
    batcher = SFTBatcher(ds, tok, batch_size=4, seq_len=24, pack=True, seed=1)
    seen = []
    for _ in range(3):
        batch = batcher.next_batch()
        assert batch.input_ids.shape == (4, 24)
        # every document ends with EOS as a trained target; count them = documents placed
        seen.append(int(((batch.target_ids == EOS) & (batch.target_mask == 1)).sum()))
    assert all(n >= 8 for n in seen)  # 8-10 positions per a+b document → at least 2 per 24-wide row
    state = batcher.state_dict()
    expected = [batcher.next_batch() for _ in range(2)]
    resumed = SFTBatcher(ds, tok, batch_size=4, seq_len=24, pack=True, seed=1)
    resumed.load_state_dict(state)
    for want in expected:
        got = resumed.next_batch()
        assert torch.equal(got.input_ids, want.input_ids) and torch.equal(got.target_mask, want.target_mask)


def test_batcher_unpacked_batch_matches_tokenize(tok):
    ds = PromptDataset([Sample("1+2=", "3"), Sample("10+20=", "30")])
    batcher = SFTBatcher(ds, tok, batch_size=2, seq_len=64, shuffle=False)
    batch = batcher.next_batch()
    # "1+2=3"+EOS fills 5 positions, "10+20=30"+EOS fills 8: the first row gets 3 pads
    assert batch.input_ids.tolist() == [b("1+2=3") + [PAD] * 3, b("10+20=30")]
    assert batch.target_ids.tolist() == [b("+2=3") + [EOS] + [PAD] * 3, b("0+20=30") + [EOS]]
    assert batch.target_mask.tolist() == [[0, 0, 0, 1, 1, 0, 0, 0], [0, 0, 0, 0, 0, 1, 1, 1]]
