"""`SpladeModel`'s head for BERT, DistilBERT and RoBERTa (no (batch, tokens, vocab) mask or bias
pass) gives the activations of the masked-LM's own logits pooled by `SpladeMaxPooling`, on
padded batches; other architectures run the whole masked-LM."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import (
    AlbertConfig,
    AlbertForMaskedLM,
    BertConfig,
    BertForMaskedLM,
    DistilBertConfig,
    DistilBertForMaskedLM,
    RobertaConfig,
    RobertaForMaskedLM,
)

from convsparse.encoders.pooling import SpladeMaxPooling, SpladeModel

VOCAB = 500


def tiny(kind: str) -> torch.nn.Module:
    torch.manual_seed(0)
    common = dict(vocab_size=VOCAB, max_position_embeddings=64)
    if kind == "bert":
        return BertForMaskedLM(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                          intermediate_size=64, **common))
    if kind == "distilbert":
        return DistilBertForMaskedLM(DistilBertConfig(dim=32, n_layers=2, n_heads=2, hidden_dim=64,
                                                      **common))
    if kind == "roberta":
        return RobertaForMaskedLM(RobertaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                                intermediate_size=64, pad_token_id=1, **common))
    return AlbertForMaskedLM(AlbertConfig(hidden_size=32, embedding_size=16, num_hidden_layers=1,
                                          num_attention_heads=2, intermediate_size=64, **common))


def padded_batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lengths = [12, 3, 40, 7]
    ids = torch.randint(5, VOCAB, (len(lengths), max(lengths)), generator=g)
    mask = torch.zeros_like(ids)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
        ids[i, n:] = 0
    return ids, mask


@pytest.mark.parametrize("kind", ["bert", "distilbert", "roberta", "albert"])
def test_head_equals_the_pooled_masked_lm_logits(kind):
    mlm = tiny(kind).eval()
    # a trained decoder has a bias; make it matter, and some logits negative
    decoder = mlm.get_output_embeddings()
    with torch.no_grad():
        decoder.bias.copy_(torch.linspace(-2.0, 1.0, VOCAB))
    model = SpladeModel(mlm).eval()
    assert (model._head is None) == (kind == "albert")
    ids, mask = padded_batch()
    with torch.inference_mode():
        fast = model(ids, mask)
        reference = SpladeMaxPooling()(mlm(input_ids=ids, attention_mask=mask).logits, mask)
        copied = copy.deepcopy(model)(ids, mask)
    torch.testing.assert_close(fast, reference, rtol=1e-5, atol=1e-6)
    # the same terms, but where a logit lies within rounding of zero
    differ = (fast > 0) != (reference > 0)
    assert (torch.maximum(fast, reference)[differ] < 1e-6).all()
    torch.testing.assert_close(copied, fast, rtol=0, atol=0)
    # a padded position never contributes: the same row alone, unpadded, gives the same vector
    with torch.inference_mode():
        alone = model(ids[1:2, :3], mask[1:2, :3])
    torch.testing.assert_close(alone[0], fast[1], rtol=1e-5, atol=1e-6)


def test_prefix_pooling_of_other_architectures_equals_the_reference():
    """The CPU bulk path of a masked-LM without the fast head reads each row's attended prefix
    of the logits (`splade_pool`): bit for bit the masked reference."""
    from convsparse.encoders.student import splade_pool

    mlm = tiny("albert").eval()
    ids, mask = padded_batch(1)
    with torch.inference_mode():
        logits = mlm(input_ids=ids, attention_mask=mask).logits
        reference = SpladeMaxPooling()(logits, mask)
        model = SpladeModel(mlm)
        assert not model.fast_head
        torch.testing.assert_close(model(ids, mask), reference, rtol=0, atol=0)
        torch.testing.assert_close(splade_pool(logits, mask.sum(dim=1).tolist()), reference,
                                   rtol=0, atol=0)
