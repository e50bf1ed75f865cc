"""Text generators that write a query for a document (``rankstack adapt --generator``), InPars style.

Two kinds, told apart by the ``--generator`` value:

* a local seq2seq model directory (a docT5query-like T5): ``transformers``' ``generate`` with seeded
  top-k sampling, the document as input;
* an ``http://`` or ``https://`` URL of an OpenAI-compatible endpoint the user runs (vLLM, llama.cpp,
  Ollama ...): a few-shot prompt to ``/chat/completions``, read with the standard library's HTTP client
  under a timeout; every failure becomes an error naming the URL and what to check.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Protocol

from rankstack.errors import ModelLoadError, RankstackError
from rankstack.types import Doc

logger = logging.getLogger(__name__)

PROMPT = """Write a short search query that the document answers. Reply with the query only.

Document: Aspirin irreversibly inhibits cyclooxygenase, reducing thromboxane production in platelets.
Query: how does aspirin affect platelets

Document: The Eiffel Tower was completed in 1889 as the entrance arch to the World's Fair in Paris.
Query: when was the eiffel tower built

Document: {document}
Query:"""
_DOCUMENT_WORDS = 300  # the prompt keeps the start of long documents


class GeneratorError(RankstackError):
    """A query generator could not be loaded or did not answer."""


class QueryGenerator(Protocol):
    name: str

    def __call__(self, docs: list[Doc]) -> list[str]: ...


def _first_line(text: str) -> str:
    line = next((s for s in text.strip().splitlines() if s.strip()), "")
    return line.strip().removeprefix("Query:").strip().strip('"')


class Seq2SeqGenerator:
    """A local encoder-decoder model (T5 family) writing one query per document."""

    def __init__(self, location: str, seed: int = 42, batch_size: int = 8, max_new_tokens: int = 32) -> None:
        config = Path(location) / "config.json"
        if not config.is_file():
            raise GeneratorError(f"{location}: no config.json; --generator takes a seq2seq model directory "
                                 "(saved with save_pretrained) or an http(s):// endpoint URL")
        if not json.loads(config.read_text(encoding="utf-8")).get("is_encoder_decoder", False):
            raise GeneratorError(f"{config}: not an encoder-decoder (seq2seq) model; give a T5-style query "
                                 "generator such as a docT5query directory, or an http(s):// endpoint URL")
        import transformers

        self.name = location
        self.seed = seed
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(location)
            self.model = transformers.AutoModelForSeq2SeqLM.from_pretrained(location).eval()
        except Exception as error:  # noqa: BLE001 - any loader failure becomes one clear message
            raise GeneratorError(f"{location}: could not load the generator ({str(error)[:200]})") from None

    def __call__(self, docs: list[Doc]) -> list[str]:
        import torch
        import transformers

        transformers.set_seed(self.seed)
        queries: list[str] = []
        for start in range(0, len(docs), self.batch_size):
            batch = [d.contents for d in docs[start:start + self.batch_size]]
            inputs = self.tokenizer(batch, return_tensors="pt", padding=True, truncation=True, max_length=256)
            inputs.pop("token_type_ids", None)
            with torch.inference_mode():
                output = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=True,
                                             top_k=10)
            queries.extend(_first_line(t) for t in self.tokenizer.batch_decode(output, skip_special_tokens=True))
        return queries


class EndpointGenerator:
    """An OpenAI-compatible chat-completions endpoint; ``url`` is its base (``http://host:port/v1``) or the
    full ``.../chat/completions`` address."""

    def __init__(self, url: str, model: str = "default", timeout: float = 60.0, seed: int = 42,
                 api_key: str | None = None) -> None:
        self.name = url
        self.url = url if url.rstrip("/").endswith("/chat/completions") else url.rstrip("/") + "/chat/completions"
        self.model = model
        self.timeout = timeout
        self.seed = seed
        self.api_key = api_key

    def _ask(self, document: str) -> str:
        body = {"model": self.model, "temperature": 0.7, "max_tokens": 48, "seed": self.seed,
                "messages": [{"role": "user", "content": PROMPT.format(document=document)}]}
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, data=json.dumps(body).encode("utf-8"), headers=headers,
                                         method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310 - user's URL
                answer: Any = json.loads(response.read().decode("utf-8"))
        except urllib.error.HTTPError as error:
            detail = error.read().decode("utf-8", "replace")[:200]
            raise GeneratorError(f"generator endpoint {self.url} answered HTTP {error.code}: {detail}; check the "
                                 "URL (an OpenAI-compatible server's /v1 base) and --generator-model") from None
        except (urllib.error.URLError, TimeoutError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise GeneratorError(f"generator endpoint {self.url} could not be reached ({reason}) within "
                                 f"{self.timeout:.0f} s; is the server running at that address?") from None
        except json.JSONDecodeError:
            raise GeneratorError(f"generator endpoint {self.url} did not answer JSON; is it an OpenAI-compatible "
                                 "chat-completions server?") from None
        try:
            return _first_line(str(answer["choices"][0]["message"]["content"]))
        except (KeyError, IndexError, TypeError):
            raise GeneratorError(f"generator endpoint {self.url} answered without choices[0].message.content; "
                                 "is it an OpenAI-compatible chat-completions server?") from None

    def __call__(self, docs: list[Doc]) -> list[str]:
        return [self._ask(" ".join(d.contents.split()[:_DOCUMENT_WORDS])) for d in docs]


def load_generator(spec: str, seed: int = 42, model: str = "default", timeout: float = 60.0) -> QueryGenerator:
    """The generator ``spec`` names: an http(s) URL is an endpoint, anything else a local model directory."""
    if spec.startswith(("http://", "https://")):
        return EndpointGenerator(spec, model=model, timeout=timeout, seed=seed)
    if not Path(spec).expanduser().is_dir():
        raise ModelLoadError(f"generator {spec} is neither a local model directory nor an http(s):// URL; give "
                             "a seq2seq model directory or the address of an OpenAI-compatible server")
    return Seq2SeqGenerator(str(Path(spec).expanduser()), seed=seed)
