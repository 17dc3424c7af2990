"""What `kd serve MODEL` loads (kdcli/config/serve_model.py): a local Hugging Face directory
with its own tokenizer, a run directory's teacher, and refusals naming what to give."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from kdcli.config.serve_model import load_served
from kdcli.engine.batcher import Batcher
from kdcli.engine.completions import Served, complete
from kdcli.errors import UserError

if importlib.util.find_spec("transformers") is None:
    pytest.skip("kdcli[hf] absent", allow_module_level=True)


def hf_helpers():
    """tests/models/test_hf.py's tiny offline GPT-2 and character tokenizer."""
    path = Path(__file__).parents[1] / "models" / "test_hf.py"
    spec = importlib.util.spec_from_file_location("hf_helpers", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory) -> Path:
    helpers = hf_helpers()
    tokenizer = helpers.char_tokenizer(helpers.TEXT)
    return helpers.save_gpt2(tmp_path_factory.mktemp("hf") / "gpt2", tokenizer, 64)


def test_a_hugging_face_directory_is_served_with_its_tokenizer(hf_dir):
    loaded = load_served(hf_dir, [], "cpu")
    assert loaded.name == "gpt2" and loaded.vocabulary == 26 and loaded.context == 64
    served = Served(loaded.name, Batcher(loaded.module, loaded.device), loaded.tokenizer,
                    loaded.vocabulary, loaded.context, 5, loaded.eos)  # fmt: skip
    try:
        prompt = [int(t) for t in loaded.tokenizer.encode("to be, or")]
        body = {"prompt": prompt, "echo": True, "logprobs": 5, "max_tokens": 0,
                "return_tokens_as_token_ids": True}  # fmt: skip
        top = complete(served, body)["choices"][0]["logprobs"]["top_logprobs"]
    finally:
        served.batcher.close()
    with torch.no_grad():
        logits = loaded.module(torch.tensor([prompt]))[0]  # the 26 tokenizer rows of 64
    expected = torch.log_softmax(logits, -1)[:-1].topk(5, dim=-1)
    for position, entry in enumerate(top[1:]):
        assert list(entry) == [f"token_id:{int(i)}" for i in expected.indices[position]]
        assert list(entry.values()) == pytest.approx(expected.values[position].tolist(), abs=1e-5)


def test_a_run_directory_serves_the_teacher_its_report_names(hf_dir, tmp_path):
    (tmp_path / "report.json").write_text(json.dumps({"teacher": {"checkpoint": str(hf_dir)}}))
    assert load_served(tmp_path, [], "cpu").name == "gpt2"


def test_what_cannot_be_served_is_refused_naming_it(tmp_path):
    with pytest.raises(UserError, match="a directory without config.json"):
        load_served(tmp_path, [], "cpu")
    (tmp_path / "report.json").write_text(json.dumps({"teacher": {}}))
    with pytest.raises(UserError, match="names no teacher checkpoint"):
        load_served(tmp_path, [], "cpu")
