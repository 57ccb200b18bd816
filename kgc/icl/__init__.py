"""In-context extraction through OpenAI-compatible APIs (`kgc icl`).

Four modes share one client layer (`kgc.icl.client`: retries with backoff, rate limits, a
response cache on disk, thread-pool or Ray Data concurrency):

- `llmicl`: NER, RE, EE, RTE and CCKS2023 instruction KGC, zero- or few-shot, en/zh
  (`kgc.icl.llmicl`);
- `augment`: labelled RE samples generated from k demonstrations, validated and
  de-duplicated (`kgc.icl.augment`);
- `fewshot_re`: TACRED-style few-shot relation classification with four prompt formats and
  micro F1 (`kgc.icl.fewshot_re`);
- `codekgc`: schema and examples as Python code; the model's code is parsed with `ast`
  against a whitelist, never executed (`kgc.icl.codekgc`).

Importing this package loads no openai, ray or torch.

`MODES` is the one list of mode names: mode `m` is the module `kgc.icl.<m>` (its
`plan(cfg, client, single)` makes the requests, `kgc.icl.modes`) and the config section
`IclConfig.<m>` (`kgc.icl.config`, whose `mode:` accepts exactly these names).
"""

MODES = ("llmicl", "augment", "fewshot_re", "codekgc")

__all__ = ["MODES"]
