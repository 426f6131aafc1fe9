import importlib

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer

import reportkd.text.mtcnn as mtcnn_pkg
from reportkd.text.mtcnn import MtCNNConfig, MtCNNForReportClassification, train_word_tokenizer
from reportkd.text.mtcnn.modeling_mtcnn import multitask_loss

TASKS = {"organ": ["breast", "kidney", "other"], "grade": ["G1", "G2", "G3", "G4"]}


def tiny_config(**kw) -> MtCNNConfig:
    args = dict(vocab_size=40, embedding_dim=6, num_filters=5, kernel_sizes=(3, 4, 5), dropout=0.0, task_labels=TASKS)
    return MtCNNConfig(**{**args, **kw})


def batch(seed: int = 0, lengths=(12, 7, 2, 1, 4, 12)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 40, (len(lengths), max(lengths)), generator=g)
    for i, n in enumerate(lengths):
        ids[i, n:] = 0
    return ids


@pytest.fixture
def model() -> MtCNNForReportClassification:
    torch.manual_seed(0)
    return MtCNNForReportClassification(tiny_config()).eval()


# --- config ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(task_labels={}), "task_labels is empty"),
        (dict(task_labels=None), "task_labels is empty"),
        (dict(task_labels={"organ": ["a", "b", "a"]}), "more than once"),
        (dict(task_labels={"organ": ["a"]}), "at least two"),
        (dict(task_labels={"or.gan": ["a", "b"]}), "without '.'"),
        (dict(kernel_sizes=(3, 0)), "kernel_sizes"),
        (dict(kernel_sizes=()), "kernel_sizes is empty"),
        (dict(pad_token_id=40), "pad_token_id"),
        (dict(dropout=1.0), "dropout"),
        (dict(conv_impl="cudnn"), "conv_impl"),
        (dict(num_members=0), "num_members"),
        (dict(tasks=["organ"]), "must list each task"),
    ],
)
def test_config_validation(bad, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**bad)


def test_config_properties_and_label_encoding():
    config = tiny_config()
    assert config.task_names == ["organ", "grade"]
    assert config.num_labels == {"organ": 3, "grade": 4}
    assert config.hidden_size == 15
    assert config.task_label2id("grade")["G3"] == 2
    assert config.encode_labels({"organ": "kidney", "grade": None}) == [1, -100]
    assert config.encode_labels({"organ": "lung", "grade": "G2"}) == [2, 1]  # unseen -> "other"
    with pytest.raises(ValueError, match="no 'other' class"):
        config.encode_labels({"organ": "breast", "grade": "G9"})


def test_config_round_trip_keeps_task_order(tmp_path):
    config = tiny_config(task_labels={"z_task": ["b", "a"], "a_task": ["x", "y"]})
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert type(loaded) is MtCNNConfig
    assert loaded.task_names == ["z_task", "a_task"] and loaded.task_labels == config.task_labels
    assert loaded.kernel_sizes == [3, 4, 5]


def test_registration_is_idempotent():
    importlib.reload(mtcnn_pkg)
    importlib.reload(mtcnn_pkg)
    assert isinstance(AutoConfig.for_model("mtcnn", task_labels=TASKS, vocab_size=10), MtCNNConfig)


# --- model ----------------------------------------------------------------------------------------------------------


def test_forward_shapes_short_and_empty_documents(model):
    ids = batch(lengths=(1, 2, 0, 9))
    out = model(ids)
    assert out.logits["organ"].shape == (4, 3) and out.logits["grade"].shape == (4, 4)
    assert out.doc_embeddings.shape == (4, 15)
    assert all(torch.isfinite(v).all() for v in out.logits.values())
    assert model(torch.zeros(2, 0, dtype=torch.long)).logits["organ"].shape == (2, 3)


@pytest.mark.parametrize("impl", ["fused", "conv1d"])
def test_padding_does_not_change_logits(impl):
    torch.manual_seed(1)
    model = MtCNNForReportClassification(tiny_config(conv_impl=impl)).eval()
    with torch.no_grad():
        model.embeddings.weight[0] = 1.5  # a non-zero pad row must not leak either
    ids = batch()
    padded = torch.nn.functional.pad(ids, (0, 6))
    together = model(padded, attention_mask=(padded != 0).long()).logits
    for i, n in enumerate((ids != 0).sum(1).tolist()):
        alone = model(ids[i : i + 1, :n]).logits
        for task in TASKS:
            torch.testing.assert_close(alone[task][0], together[task][i], rtol=1e-5, atol=1e-6)


def test_attention_mask_masks_tokens(model):
    ids = batch()
    mask = (ids != 0).long()
    mask[0, 6:] = 0
    truncated = ids.clone()
    truncated[0, 6:] = 0
    torch.testing.assert_close(model(ids, attention_mask=mask).logits["organ"], model(truncated).logits["organ"])


def test_fused_matches_conv1d_forward_and_gradients():
    torch.manual_seed(2)
    fused = MtCNNForReportClassification(tiny_config())
    reference = MtCNNForReportClassification(tiny_config(conv_impl="conv1d"))
    reference.load_state_dict(fused.state_dict())
    ids, labels = batch(), torch.tensor([[0, 1], [2, -100], [-100, 3], [1, 0], [-100, -100], [2, 2]])
    for nonzero_pad in (False, True):
        with torch.no_grad():
            for m in (fused, reference):
                m.embeddings.weight[0] = 0.7 if nonzero_pad else 0.0
        out_f, out_r = fused(ids, labels=labels), reference(ids, labels=labels)
        torch.testing.assert_close(out_f.loss, out_r.loss)
        fused.zero_grad(), reference.zero_grad()
        out_f.loss.backward(), out_r.loss.backward()
        for (name, p), q in zip(fused.named_parameters(), reference.parameters()):
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=name)
        assert fused.embeddings.weight.grad[0].abs().sum() == 0  # pad row never gets gradient


def test_loss_ignores_missing_labels(model):
    ids = batch()
    labels = torch.tensor([[0, 1], [2, -100], [-100, 3], [1, 0], [-100, -100], [2, 2]])
    out = model(ids, labels=labels)
    expected = 0.0
    for t, task in enumerate(TASKS):
        present = labels[:, t] != -100
        expected += torch.nn.functional.cross_entropy(out.logits[task][present], labels[present, t])
    torch.testing.assert_close(out.loss, expected / 2)
    # a task with no label in the batch contributes 0 (still divided by the number of tasks)
    only_organ = labels.clone()
    only_organ[:, 1] = -100
    organ_ce = torch.nn.functional.cross_entropy(
        out.logits["organ"][labels[:, 0] != -100], labels[labels[:, 0] != -100, 0]
    )
    torch.testing.assert_close(model(ids, labels=only_organ).loss, organ_ce / 2)
    all_missing = torch.full_like(labels, -100)
    assert model(ids, labels=all_missing).loss.item() == 0.0


def test_out_of_vocabulary_ids_raise(model):
    with pytest.raises(ValueError, match="outside"):
        model(torch.tensor([[1, 2, 40]]))


def test_loss_rejects_bad_label_shape(model):
    with pytest.raises(ValueError, match="num_tasks"):
        model(batch(), labels=torch.zeros(6, dtype=torch.long))


def test_multitask_loss_member_mask():
    logits = {"a": torch.randn(2, 3, 4)}
    labels = torch.tensor([[1], [2], [3]])
    mask = torch.tensor([[True, False, True], [False, False, False]])
    losses = multitask_loss(logits, labels, ["a"], mask)
    expected = torch.nn.functional.cross_entropy(logits["a"][0, [0, 2]], labels[[0, 2], 0])
    torch.testing.assert_close(losses[0], expected)
    assert losses[1].item() == 0.0


def test_predict_proba(model):
    model.train()
    probs = model.predict_proba(batch(), temperature=2.0)
    assert model.training  # mode restored
    torch.testing.assert_close(probs["grade"].sum(-1), torch.ones(6))
    logits = model.eval()(batch()).logits["grade"]
    torch.testing.assert_close(probs["grade"], torch.softmax(logits / 2.0, -1))
    with pytest.raises(ValueError, match="temperature"):
        model.predict_proba(batch(), temperature=0.0)


def test_save_load_round_trip(model, tmp_path):
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert type(loaded) is MtCNNForReportClassification
    ids = batch()
    for task in TASKS:
        torch.testing.assert_close(loaded(ids).logits[task], model(ids).logits[task], rtol=0, atol=0)


# --- tokenizer ------------------------------------------------------------------------------------------------------

CORPUS = [
    "SURGICAL PATHOLOGY REPORT: Right kidney, radical nephrectomy.",
    "Diagnosis: clear cell renal cell carcinoma, grade 2, pT2 N0.",
    "Left breast: invasive ductal carcinoma, grade 3, pT2. Accession 123456789.",
    "Kidney tumour, grade 2; margins negative. ﬁbrous capsule.",
]


def test_tokenizer_vocab_specials_and_min_count():
    tok = train_word_tokenizer(CORPUS, min_count=2, max_length=8)
    assert tok.convert_ids_to_tokens([0, 1]) == ["[PAD]", "[UNK]"]
    assert tok.pad_token_id == 0 and tok.unk_token_id == 1 and tok.model_max_length == 8
    vocab = tok.get_vocab()
    assert "grade" in vocab and "kidney" in vocab and "pt2" in vocab  # lower-cased, counted >= 2
    assert "nephrectomy" not in vocab  # seen once -> [UNK]
    ids = tok("Nephrectomy of the KIDNEY")["input_ids"]
    assert ids[0] == 1 and ids[-1] == vocab["kidney"]
    assert len(tok(" ".join(CORPUS), truncation=True)["input_ids"]) == 8
    assert tok(["", "   \n"], padding=True)["input_ids"] == [[], []]


def test_tokenizer_normalisation_and_max_vocab():
    tok = train_word_tokenizer(CORPUS, min_count=1)
    tokens = tok.convert_ids_to_tokens(tok("pT2 N0, 3+3=6 fibrous 987654 ﬁbrous")["input_ids"])
    assert tokens[:3] == ["pt2", "n0", ","]
    assert tokens[-2:] == ["000", "fibrous"]  # long numbers folded; NFKC ligature
    small = train_word_tokenizer(CORPUS, min_count=1, max_vocab=10)
    assert len(small) == 10
    with pytest.raises(ValueError, match="min_count"):
        train_word_tokenizer(CORPUS, min_count=0)


def test_tokenizer_round_trip(tmp_path):
    tok = train_word_tokenizer(CORPUS, min_count=1, max_length=16)
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    for text in CORPUS + ["unseen words here", ""]:
        assert loaded(text, truncation=True)["input_ids"] == tok(text, truncation=True)["input_ids"]
    assert loaded.model_max_length == 16 and loaded.pad_token_id == 0
    encoded = loaded(CORPUS[:2], padding=True, truncation=True, return_tensors="pt")
    config = tiny_config(vocab_size=len(loaded))
    logits = MtCNNForReportClassification(config)(**encoded).logits
    assert logits["organ"].shape == (2, 3)


def test_autocast_bf16_runs_and_tracks_fp32():
    torch.manual_seed(3)
    model = MtCNNForReportClassification(tiny_config())
    ids, labels = batch(), torch.tensor([[0, 1], [2, -100], [-100, 3], [1, 0], [-100, -100], [2, 2]])
    reference = model(ids).logits["grade"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(ids, labels=labels)
    torch.testing.assert_close(out.logits["grade"].float(), reference, rtol=0.05, atol=0.05)
    out.loss.backward()
    assert model.convs[0].weight.grad.dtype == torch.float32 and torch.isfinite(model.convs[0].weight.grad).all()
