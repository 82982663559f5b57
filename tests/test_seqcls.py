"""A *ForSequenceClassification checkpoint keeps its own classifier as the final exit: the
full-depth runtime reproduces the stock transformers model's logits."""

import numpy as np
import pytest
import torch
from helpers import export_tiny, make_tiny_model

from dynexport.runtime import FullDepth, load

TEXTS = ["good day and my phone is great", "awful flight", "blue table monday", "love it so"]


@pytest.mark.parametrize("family", ["bert", "mpnet"])
def test_seqcls_checkpoint_final_head_matches_transformers(tiny, family):
    from transformers import AutoModelForSequenceClassification
    model_dir = make_tiny_model(tiny["root"] / f"{family}-seqcls", family, seqcls=True)
    tiny = {**tiny, f"{family}-seqcls": model_dir}
    art, _ = export_tiny(tiny, f"{family}-seqcls", f"{family}-seqcls")
    pipe = load(art, "onnxruntime")
    assert pipe.manifest.labels == ["neg", "neu", "pos"]
    b = pipe.encoder(TEXTS)
    hf = AutoModelForSequenceClassification.from_pretrained(model_dir, attn_implementation="eager").eval()
    with torch.no_grad():
        ref = hf(input_ids=torch.from_numpy(b.input_ids), attention_mask=torch.from_numpy(b.attention_mask)).logits
    res = pipe.run(TEXTS, FullDepth(), collect_all=True)
    np.testing.assert_allclose(res.all_logits[-1], ref.numpy(), atol=1e-4)
    assert not (tiny["ckpt"] / pipe.manifest.source.checkpoint / "adapter").exists()  # encoder untouched
