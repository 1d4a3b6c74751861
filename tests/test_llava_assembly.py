"""The paper's starting model assembled from LLM + CLIP vision tower + stage-1 projector (tiny parts saved here)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_model import make_pool

from progress_core.model.assembly import ASSEMBLY_FILE, assemble_llava, base_model_path
from progress_core.model.checkpoint import ModelError
from progress_core.model.config import VICUNA_V1_SYSTEM, ModelConfig
from progress_core.model.loading import load_model
from progress_core.training.config import TrainingConfig
from progress_core.training.loop import train_to_step
from progress_core.training.samples import Encoder, samples_rows

TEXT_WIDTH, VISION_WIDTH = 32, 24


def _word_tokenizer(words):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>"]
    vocab = {w: i for i, w in enumerate(specials + sorted(set(words)))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    """A tiny Llama with a tokenizer lacking <image>, a tiny CLIP (text + vision) and an original projector file."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, LlamaConfig, LlamaForCausalLM

    root = tmp_path_factory.mktemp("parts")
    pool = make_pool(root, n=12)
    words = [w for c in pool["conversations"] for t in json.loads(c) for w in t["value"].split()]
    tok = _word_tokenizer(words + ["USER:", "ASSISTANT:"] + VICUNA_V1_SYSTEM.split())
    torch.manual_seed(0)
    llm = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tok),
            hidden_size=TEXT_WIDTH,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=256,
            bos_token_id=1,
            eos_token_id=2,
        )
    )
    llm.save_pretrained(root / "llm")
    tok.save_pretrained(root / "llm")
    clip = CLIPModel(
        CLIPConfig(
            text_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2},
            vision_config={
                "image_size": 28,
                "patch_size": 14,
                "hidden_size": VISION_WIDTH,
                "intermediate_size": 48,
                "num_hidden_layers": 3,
                "num_attention_heads": 2,
            },
            projection_dim=8,
        )
    )
    clip.save_pretrained(root / "clip")
    CLIPImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28}).save_pretrained(root / "clip")
    projector = {
        "model.mm_projector.0.weight": torch.randn(TEXT_WIDTH, VISION_WIDTH),
        "model.mm_projector.0.bias": torch.randn(TEXT_WIDTH),
        "model.mm_projector.2.weight": torch.randn(TEXT_WIDTH, TEXT_WIDTH),
        "model.mm_projector.2.bias": torch.randn(TEXT_WIDTH),
    }
    (root / "pretrain").mkdir()
    torch.save(projector, root / "pretrain" / "mm_projector.bin")
    cfg = ModelConfig(
        mode="real",
        language_model=str(root / "llm"),
        vision_tower=str(root / "clip"),
        mm_projector=str(root / "pretrain"),
        dtype="float32",
        lora_r=4,
        lora_alpha=8,
        gradient_checkpointing=False,
    )
    return root, pool, cfg, llm, clip, projector


def test_assembled_model_carries_each_part_unchanged(parts, tmp_path, monkeypatch):
    from transformers import LlavaForConditionalGeneration

    root, pool, cfg, llm, clip, projector = parts
    monkeypatch.setenv("PROGRESS_MODEL_CACHE", str(tmp_path / "cache"))
    path = base_model_path(cfg)
    assert path.startswith(str(tmp_path / "cache")) and base_model_path(cfg) == path
    model = LlavaForConditionalGeneration.from_pretrained(path)
    proj = model.model.multi_modal_projector
    assert torch.equal(proj.linear_1.weight, projector["model.mm_projector.0.weight"])
    assert torch.equal(proj.linear_1.bias, projector["model.mm_projector.0.bias"])
    assert torch.equal(proj.linear_2.weight, projector["model.mm_projector.2.weight"])
    assert torch.equal(proj.linear_2.bias, projector["model.mm_projector.2.bias"])
    vision = dict(model.model.vision_tower.named_parameters())
    for name, p in clip.vision_model.named_parameters():
        assert torch.equal(vision.get(f"vision_model.{name}", vision.get(name)), p), name
    layer = model.model.language_model.layers[0].self_attn.q_proj.weight
    assert torch.equal(layer, llm.model.layers[0].self_attn.q_proj.weight)
    assert model.config.vision_feature_layer == -2 and model.config.vision_feature_select_strategy == "default"
    assert model.config.image_seq_length == 4 and model.config.projector_hidden_act == "gelu"
    assert json.loads((tmp_path / "cache" / path.rsplit("/", 1)[1] / ASSEMBLY_FILE).read_text())["image_tokens"] == 4


def test_assembled_model_trains_a_lora_step_in_vicuna_format(parts, tmp_path, monkeypatch):
    root, pool, cfg, *_ = parts
    monkeypatch.setenv("PROGRESS_MODEL_CACHE", str(tmp_path / "cache"))
    model, processor = load_model(base_model_path(cfg), cfg)
    assert processor.system_prompt == VICUNA_V1_SYSTEM
    encoder = Encoder(processor, model.config.image_token_index, root / "images", 2048)
    conv, image = samples_rows(pool.iloc[:1])[0]
    text = processor.tokenizer.decode(encoder.encode(conv, image, 0).input_ids)
    assert text.startswith("<s> " + VICUNA_V1_SYSTEM + " USER: <image>")
    train = TrainingConfig(model=cfg, global_batch_size=4, final_step=3, shuffle=False, max_length=2048)
    assert train.proj_lr() == 2e-5 and train.lr() == 2e-4
    result = train_to_step(None, pool.iloc[:8], root / "images", 2, train, tmp_path / "ck", progress=False)
    assert len(result.losses) == 2 and np.isfinite(result.losses).all()
    assert (result.checkpoint / "adapter_config.json").is_file()
    reloaded, _ = load_model(result.checkpoint, cfg, trainable=False)
    assert reloaded.peft_config["default"].r == 4


def test_bad_projector_files_are_named_errors(parts, tmp_path):
    root, pool, cfg, *_ = parts
    torch.save({"mm_projector.0.weight": torch.zeros(1)}, tmp_path / "renamed.bin")
    with pytest.raises(ModelError, match="lacks projector keys"):
        assemble_llava(cfg.model_copy(update={"mm_projector": str(tmp_path / "renamed.bin")}), tmp_path / "x")
    wrong = {k: torch.zeros(3, 3) for k in ("0.weight", "0.bias", "2.weight", "2.bias")}
    torch.save({f"model.mm_projector.{k}": v for k, v in wrong.items()}, tmp_path / "wrong.bin")
    with pytest.raises(ModelError, match=r"linear_1.weight has shape \(3, 3\), the models need \(32, 24\)"):
        assemble_llava(cfg.model_copy(update={"mm_projector": str(tmp_path / "wrong.bin")}), tmp_path / "y")
    with pytest.raises(ModelError, match="no mm_projector.bin"):
        assemble_llava(cfg.model_copy(update={"mm_projector": str(tmp_path)}), tmp_path / "z")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
