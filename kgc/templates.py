"""Chat templates: how a model family wants one instruction turn laid out.

A template turns (system, query) into the prompt text that ends with the assistant marker;
the target follows it and ends with the tokenizer's EOS (or the template's own stop string).
The layouts are what the public checkpoints were trained on (alpaca for LLaMA/ZhiXi/IEPile
LoRAs, llama2_zh for OneKE, chatml for Qwen, …). `tokenizer` means "use the tokenizer's own
`chat_template`" and is resolved in `kgc.modeling`.

Pure Python: no tokenizer here (sample → text is separate from text → tokens).
"""

from __future__ import annotations

from dataclasses import dataclass

from kgc.errors import KgcError

LLAMA2_SYSTEM = (
    "You are a helpful, respectful and honest assistant. Always answer as helpfully as "
    "possible, while being safe. Your answers should not include any harmful, unethical, "
    "racist, sexist, toxic, dangerous, or illegal content. Please ensure that your responses "
    "are socially unbiased and positive in nature.\n\nIf a question does not make any sense, "
    "or is not factually coherent, explain why instead of answering something not correct. "
    "If you don't know the answer to a question, please don't share false information."
)
ALPACA_SYSTEM = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request."
)
VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant "
    "gives helpful, detailed, and polite answers to the user's questions."
)
HELPFUL = "You are a helpful assistant."
HELPFUL_ZH = "You are a helpful assistant. 你是一个乐于助人的助手。"
CHATGLM3_SYSTEM = (
    "You are ChatGLM3, a large language model trained by Zhipu.AI. Follow the user's "
    "instructions carefully. Respond using markdown."
)
AQUILA_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. The assistant "
    "gives helpful, detailed, and polite answers to the human's questions."
)
DEEPSEEK_SYSTEM = (
    "You are an AI programming assistant, utilizing the Deepseek Coder model, developed by "
    "Deepseek Company, and you only answer questions related to computer science. For "
    "politically sensitive questions, security and privacy issues, and other non-computer "
    "science questions, you will refuse to answer."
)
YAYI_SYSTEM = (
    "You are a helpful, respectful and honest assistant named YaYi developed by Beijing Wenge "
    "Technology Co.,Ltd. Always answer as helpfully as possible, while being safe.  Your "
    "answers should not include any harmful, unethical, racist, sexist, toxic, dangerous, or "
    "illegal content. Please ensure that your responses are socially unbiased and positive in "
    "nature.\n\nIf a question does not make any sense, or is not factually coherent, explain "
    "why instead of answering something not correct. If you don't know the answer to a "
    "question, please don't share false information."
)


@dataclass(frozen=True)
class Template:
    """One turn: `prefix` (formatted with {system}, when a system text exists; `bare` in
    its place when not) + `user` (formatted with {query}, ending with the assistant marker)."""

    name: str
    user: str
    prefix: str = ""
    system: str = ""
    stop: tuple[str, ...] = ()  # extra end-of-turn strings (besides the tokenizer's EOS)
    eos: str | None = None  # the string that closes an answer, when not the tokenizer's EOS
    add_bos: bool = True  # prepend the tokenizer's BOS token
    bare: str = ""  # what opens the prompt when there is no system text ("[gMASK]sop")

    def prompt(self, query: str, system: str | None = None) -> str:
        sys_text = self.system if system is None else system
        head = self.prefix.format(system=sys_text) if (self.prefix and sys_text) else self.bare
        return head + self.user.format(query=query)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "user": self.user,
            "prefix": self.prefix,
            "system": self.system,
            "stop": list(self.stop),
            "eos": self.eos,
            "add_bos": self.add_bos,
            "bare": self.bare,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Template:
        return cls(**{**d, "stop": tuple(d.get("stop", ()))})


_LLAMA2 = "[INST] <<SYS>>\n{system}\n<</SYS>>\n\n"
_CHATML_USER = "<|im_start|>user\n{query}<|im_end|>\n<|im_start|>assistant\n"
_LLAMA3_USER = (
    "<|start_header_id|>user<|end_header_id|>\n\n{query}<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n"
)

TEMPLATES: dict[str, Template] = {
    t.name: t
    for t in [
        Template(
            "alpaca", "### Instruction:\n{query}\n\n### Response:\n", "{system}\n\n", ALPACA_SYSTEM
        ),
        Template("vanilla", "{query}"),
        Template("default", "Human: {query}\nAssistant:", "{system}\n", VICUNA_SYSTEM),
        Template("vicuna", "USER: {query} ASSISTANT:", "{system} ", VICUNA_SYSTEM),
        # llama2 puts the system block inside the first [INST]; without one, "[INST] q [/INST]"
        Template("llama2", "{query} [/INST]", _LLAMA2, LLAMA2_SYSTEM, bare="[INST] "),
        Template("llama2_zh", "{query} [/INST]", _LLAMA2, HELPFUL_ZH, bare="[INST] "),
        Template(
            "llama3",
            _LLAMA3_USER,
            "<|start_header_id|>system<|end_header_id|>\n\n{system}<|eot_id|>",
            HELPFUL,
            stop=("<|eot_id|>",),
            eos="<|eot_id|>",
        ),
        Template(
            "llama3_zh",
            _LLAMA3_USER,
            "<|start_header_id|>system<|end_header_id|>\n\n{system}<|eot_id|>",
            HELPFUL_ZH,
            stop=("<|eot_id|>",),
            eos="<|eot_id|>",
        ),
        Template(
            "qwen",
            _CHATML_USER,
            "<|im_start|>system\n{system}<|im_end|>\n",
            HELPFUL,
            stop=("<|im_end|>",),
            eos="<|im_end|>",
            add_bos=False,
        ),
        Template("baichuan", "<reserved_102>{query}<reserved_103>"),
        Template("baichuan2", "<reserved_106>{query}<reserved_107>"),
        Template("chatglm2", "[gMASK]sop[Round 1]\n\n问：{query}\n\n答：", add_bos=False),
        # [gMASK]sop opens every ChatGLM3 prompt, with or without a system turn
        Template(
            "chatglm3",
            "<|user|>\n{query}<|assistant|>",
            "[gMASK]sop<|system|>\n{system}",
            CHATGLM3_SYSTEM,
            stop=("<|user|>", "<|observation|>"),
            add_bos=False,
            bare="[gMASK]sop",
        ),
        Template(
            "moss", "<|Human|>: {query}<eoh>\n<|MOSS|>:", "{system}", stop=("<eom>",), eos="<eom>"
        ),
        Template("mistral", "[INST] {query} [/INST]", "{system} "),
        Template("falcon", "User: {query}\nFalcon:", add_bos=False),
        Template("belle", "Human: {query}\n\nBelle: "),
        Template("ziya", "<human>:{query}\n<bot>:"),
        Template("xverse", "Human: {query}\n\nAssistant: "),
        Template("intern", "<|User|>:{query}<eoh>\n<|Bot|>:", stop=("<eoa>",), eos="<eoa>"),
        Template(
            "openchat",
            "GPT4 Correct User: {query}<|end_of_turn|>GPT4 Correct Assistant:",
            stop=("<|end_of_turn|>",),
            eos="<|end_of_turn|>",
        ),
        Template(
            "zephyr", "<|user|>\n{query}</s><|assistant|>", "<|system|>\n{system}</s>", HELPFUL
        ),
        Template(
            "yi",
            _CHATML_USER,
            "<|im_start|>system\n{system}<|im_end|>\n",
            stop=("<|im_end|>",),
            eos="<|im_end|>",
            add_bos=False,
        ),
    ]
}
TEMPLATES.update(
    (t.name, t)
    for t in [
        # the rest of DeepKE-LLM's templates (example/llm/InstructKGC/src/datamodule/template.py)
        Template(
            "aquila",
            "Human: {query}###Assistant:",
            "{system}###",
            AQUILA_SYSTEM,
            stop=("</s>",),
        ),
        Template("openba", "<S>{query}<extra_id_0>"),  # OpenBA (encoder-decoder)
        Template("bluelm", "[|Human|]:{query}[|AI|]:"),
        Template(
            "deepseek",
            "### Instruction:\n{query}\n\n### Response:\n",
            "{system}\n<|EOT|>\n\n",
            DEEPSEEK_SYSTEM,
            stop=("<|EOT|>",),
            eos="<|EOT|>",
        ),
        Template(
            "starchat",
            "<|user|>\n{query}<|end|>\n<|assistant|>",
            "<|system|>\n{system}<|end|>\n",
            stop=("<|end|>",),
            eos="<|end|>",
            bare="<|system|>\n<|end|>\n",
        ),
        Template(
            "yayi",
            "<|Human|>:\n{query}\n\n<|YaYi|>:",
            "<|System|>:\n{system}\n\n",
            YAYI_SYSTEM,
            stop=("<|End|>",),
            eos="<|End|>",
        ),
    ]
)
TEMPLATES["chatml"] = TEMPLATES["qwen"]

TOKENIZER = "tokenizer"  # use the tokenizer's own chat_template


def get_template(name: str) -> Template:
    try:
        return TEMPLATES[name]
    except KeyError:
        raise KgcError(
            f"unknown chat template {name!r}; choose one of {', '.join(sorted(TEMPLATES))}, "
            f"{TOKENIZER!r} (the tokenizer's own) or 'auto'"
        ) from None


@dataclass(frozen=True)
class ChatFormat:
    """How prompts are laid out: a kgc template, or the tokenizer's own chat_template."""

    template: Template | None  # None → tokenizer.apply_chat_template
    system: str | None = None

    def to_dict(self) -> dict:
        return {
            "template": self.template.to_dict() if self.template else TOKENIZER,
            "system": self.system,
        }

    @classmethod
    def from_dict(cls, d: dict) -> ChatFormat:
        t = d.get("template")
        return cls(None if t == TOKENIZER else Template.from_dict(t), d.get("system"))
