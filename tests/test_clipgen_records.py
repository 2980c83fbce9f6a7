"""How a sampling model's images were drawn is part of its evaluation records (CLIP-GEN's `clipgen.model.sampling`),
and a CLIP-based metric whose CLIP also reranked the candidates is flagged in the record and in the report."""
from types import SimpleNamespace

import pandas as pd
from helpers import tiny_galip

from galip_bench.evaluation.protocols import get_protocol
from galip_bench.report import _sampling_notes
from models.clipgen import SamplingConfig


def sampler(candidates: int, clip) -> SimpleNamespace:
    return SimpleNamespace(cfg=SimpleNamespace(sampling=SamplingConfig(candidates=candidates)), clip=clip)


def test_records_carry_the_sampling_and_flag_reranking_by_the_metrics_own_clip():
    own, other = tiny_galip(seed=4).clip, tiny_galip(seed=5).clip
    for candidates, flagged in ((1, False), (4, True)):
        proto = get_protocol("clip_score")
        proto.observe_model(sampler(candidates, own), own)  # the metric runs the generator's own CLIP
        settings = proto.settings_dict()
        assert settings["sampling"]["candidates"] == candidates
        assert (settings["sampling"]["top_k"], settings["sampling"]["top_p"]) == (500, 0.95)
        assert settings["self_referential"] is True
        assert settings["reranked_by_metric_clip"] is flagged
    held = get_protocol("clip_score_heldout")
    held.observe_model(sampler(4, own), other)  # another CLIP grades: the selection did not use it
    assert held.settings_dict()["reranked_by_metric_clip"] is False
    fid = get_protocol("fid")
    fid.observe_model(sampler(4, own), None)
    assert fid.settings_dict()["sampling"]["candidates"] == 4 and "reranked_by_metric_clip" not in fid.settings_dict()
    galip = get_protocol("clip_score")
    galip.observe_model(tiny_galip(seed=4), own)  # GALIP draws one image per noise vector: no sampling key
    assert "sampling" not in galip.settings_dict() and "reranked_by_metric_clip" not in galip.settings_dict()


def test_report_names_each_variants_sampling_and_flags_reranking_by_the_metrics_clip():
    plain = {"sampling": {"temperature": 1.0, "top_k": 500, "top_p": 0.95, "candidates": 1},
             "reranked_by_metric_clip": False}
    reranked = {"sampling": {**plain["sampling"], "candidates": 64, "rerank_clip": "the generator's own CLIP"},
                "reranked_by_metric_clip": True}
    recs = pd.DataFrame({"protocol": ["clip_score"] * 3, "variant": ["clip_gen", "clip_gen_rerank", "galip"],
                         "settings": [plain, reranked, {"self_referential": True}]})
    text = "\n".join(_sampling_notes(recs, "clip_score"))
    assert "`clip_gen`: temperature 1, top-k 500, top-p 0.95, 1 candidate per caption (no reranking)" in text
    assert "`clip_gen_rerank`: temperature 1, top-k 500, top-p 0.95, 64 candidates per caption" in text
    assert "Reranked by this metric's CLIP** (`clip_gen_rerank`" in text and "`galip`" not in text
    assert _sampling_notes(recs[recs["variant"] == "galip"], "clip_score") == []
