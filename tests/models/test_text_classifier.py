"""The built-in transformer text classifier (models/text/transformer.py): built from the
dataset's facts, and blind to padding: a text's logits do not depend on how much padding
follows it, what the padding positions hold, or which texts share its batch."""

from __future__ import annotations

import torch
from omegaconf import OmegaConf

from kdcli.config.build import instantiate_config
from kdcli.config.paths import config_dir
from kdcli.data import DatasetInfo
from kdcli.engine.measure import count_params, flops_per_image
from kdcli.models.text.transformer import TextTransformer

PAD = 3  # not 0, so that nothing passes by treating id 0 as padding
INFO = DatasetInfo(
    "texts", 4, 1, 24, (), (), "labelled_text", vocabulary=30, padding=PAD, classes=tuple("abcd")
)


def model() -> TextTransformer:
    torch.manual_seed(0)
    return TextTransformer(**INFO.model_kwargs(), layers=2, heads=2, width=16).eval()


def padded(text: list[int], length: int) -> torch.Tensor:
    return torch.tensor([text + [PAD] * (length - len(text))])


def test_logits_do_not_depend_on_the_padding():
    classifier, text = model(), [5, 9, 12, 7, 20]
    short = classifier(padded(text, 5))
    assert torch.allclose(classifier(padded(text, 24)), short, atol=1e-6)
    with_neighbour = torch.cat([padded(text, 12), padded(list(range(4, 16)), 12)])
    assert torch.allclose(classifier(with_neighbour)[:1], short, atol=1e-6)
    # another text differs: the mask hides padding, not the text
    assert not torch.allclose(classifier(padded([5, 9, 12, 7, 21], 5)), short, atol=1e-4)


def test_padding_is_masked_while_training_too():
    classifier, text = model().train(), [5, 9, 12, 7, 20]
    classifier.drop.p = 0.0
    for block in classifier.blocks:
        block.dropout = 0.0
        block.mlp[-1].p = 0.0
    loss = classifier(padded(text, 24)).logsumexp(1).sum()
    loss.backward()
    assert classifier.tokens.weight.grad[PAD].abs().sum() == 0, "padding learns nothing"
    assert torch.allclose(classifier(padded(text, 24)), classifier(padded(text, 6)), atol=1e-6)


def test_a_text_of_padding_alone_gives_finite_logits():
    logits = model()(padded([], 10))
    assert logits.shape == (1, 4) and torch.isfinite(logits).all()


def test_the_configs_build_classifiers_from_the_datasets_facts():
    sizes = {}
    for name in ("text_transformer", "text_transformer_tiny"):
        node = OmegaConf.load(config_dir() / "model" / f"{name}.yaml")
        built = instantiate_config(node, "model", **INFO.model_kwargs())
        assert built(INFO.example()).shape == (1, INFO.num_classes)
        assert built.tokens.num_embeddings == 30 and built.positions.num_embeddings == 24
        sizes[name] = (count_params(built), flops_per_image(built, INFO))
    small, tiny = sizes["text_transformer"], sizes["text_transformer_tiny"]
    assert small[0] > tiny[0] and small[1] > tiny[1], "the teacher-sized one is larger"


def test_the_flops_count_every_matrix_product_attention_included():
    """Per block: the query/key/value, output and two MLP layers (2 FLOPs a multiply-add), and
    attention's scores and weighted sum over the whole text (torch's counter misses the fused
    CPU attention kernel on its own: kdcli/engine/measure.py adds it)."""
    length, width, layers = INFO.image_size, 16, 2
    linear = 2 * length * width * (3 * width + width + 4 * width + 4 * width)
    attention = 2 * 2 * length * length * width
    head = 2 * width * INFO.num_classes
    assert flops_per_image(model(), INFO) == layers * (linear + attention) + head
