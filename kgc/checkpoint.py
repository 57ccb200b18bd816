"""The checkpoint layout: every file and folder name of a kgc checkpoint, its manifests, and
which checkpoint a resumed run starts from. Pure Python (no torch, no Ray).

A checkpoint folder (Ray Train's `storage_path/run.name/checkpoint_*`) holds:

    kgc_config.yaml            the resolved FinetuneConfig (base model, method, data, …)
    chat_format.json           the prompt layout, so extraction and serving format as training did
    model/                     the tokenizer, and a peft adapter (adapter_config.json,
                               adapter_model.safetensors) or, for full/freeze, trainable.pt
    trainer_state.pt           step, optimizer and scheduler state (DDP)
    deepspeed/state/           the DeepSpeed engine's state, every rank's shards (DeepSpeed)
    kgc_manifest.json          written last, see below (kgc_manifest.rank<N>.json: rank N's)

Every rank that writes checkpoint files writes, after them, a manifest of their sizes and
sha256 (`kgc_manifest.json` on rank 0, which also lists the ranks whose manifests belong to
the checkpoint; `kgc_manifest.rank<N>.json` on the others). A checkpoint is used only when
every manifest is there and every file matches it, with no file added: a save cut short
(manifest or files missing, whatever order storage copied them in), a truncated
`trainer_state.pt` or a stale adapter copied in is skipped, with the reason printed, and the
run resumes from the newest intact checkpoint in the run folder (storage_path/name/
checkpoint_*). A run folder that holds checkpoints none of which is intact is an error (the
driver checks before any worker starts, `kgc train --check` too): delete the folder to start
over, or choose a new run.name. Checkpoints written before manifests existed count as broken.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from kgc.config import ModelConfig, read_yaml_file
from kgc.errors import KgcError, Problem
from kgc.templates import ChatFormat

CONFIG_FILE = "kgc_config.yaml"
CHAT_FILE = "chat_format.json"
WEIGHTS_DIR = "model"
TRAINABLE_FILE = "trainable.pt"  # full / freeze fine-tuning: the weights that were trained
ADAPTER_CONFIG = "adapter_config.json"  # peft's names for a saved adapter
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_WEIGHT_FILES = (ADAPTER_WEIGHTS, "adapter_model.bin")  # peft writes one of these
TOKENIZER_CONFIG = "tokenizer_config.json"  # a tokenizer saved beside the weights
STATE_FILE = "trainer_state.pt"
DS_DIR = "deepspeed"
DS_TAG = "state"  # the DeepSpeed engine's checkpoint tag: deepspeed/state/
MANIFEST = "kgc_manifest.json"
MANIFEST_FORMAT = 1
CHECKPOINT_GLOB = "checkpoint_*"  # Ray Train's checkpoint folders in a run folder
_MANIFEST_STEM = MANIFEST.removesuffix(".json")

log = logging.getLogger("kgc")


# ----------------------------------------------------------------------------- manifests
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _is_manifest(rel: str) -> bool:
    return "/" not in rel and rel.startswith(_MANIFEST_STEM) and rel.endswith(".json")


def rank_manifest_name(rank: int) -> str:
    return MANIFEST if rank == 0 else f"{_MANIFEST_STEM}.rank{rank}.json"


def _files(d: Path) -> dict[str, Path]:
    """Regular files under d by their relative POSIX path; dotfiles (filesystem litter
    such as NFS's .nfs*) and the manifests themselves left out."""
    out = {}
    for p in sorted(d.rglob("*")):
        rel = p.relative_to(d).as_posix()
        hidden = any(part.startswith(".") for part in rel.split("/"))
        if p.is_file() and not hidden and not _is_manifest(rel):
            out[rel] = p
    return out


def write_manifest(d: Path, *, step: int, rank: int = 0, ranks: list[int] | None = None) -> Path:
    """Write this rank's manifest into checkpoint folder d, after all its other files:
    size and sha256 of each. Rank 0's also names the ranks whose manifests must be there."""
    body: dict[str, Any] = {"format": MANIFEST_FORMAT, "step": step, "rank": rank}
    if rank == 0:
        body["ranks"] = sorted(set(ranks or [0]) | {0})
    body["files"] = {
        rel: {"size": p.stat().st_size, "sha256": _sha256(p)} for rel, p in _files(d).items()
    }
    out = d / rank_manifest_name(rank)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(body, indent=1), encoding="utf-8")
    os.replace(tmp, out)
    return out


def _read_manifest(path: Path) -> dict:
    body = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(body, dict) or not isinstance(body.get("files"), dict):
        raise ValueError("no `files` mapping")
    return body


def manifest_step(d: Path) -> int | None:
    try:
        return int(_read_manifest(d / MANIFEST)["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def checkpoint_problem(d: Path, *, hashes: bool = True) -> str | None:
    """Why checkpoint folder d must not be used, or None when it is intact: every manifest
    present and of the same step, every file listed there with its size (and, with
    `hashes`, its sha256), no file that no manifest lists."""
    if not d.is_dir():
        return "the folder does not exist"
    if not (d / MANIFEST).is_file():
        return (
            f"no {MANIFEST}: its save did not finish (or a kgc without checkpoint manifests "
            "wrote it)"
        )
    try:
        main = _read_manifest(d / MANIFEST)
        manifests = [main]
        for r in main.get("ranks", [0]):
            if int(r) == 0:
                continue
            path = d / rank_manifest_name(int(r))
            if not path.is_file():
                return f"{path.name} is missing: rank {r}'s files did not all arrive"
            other = _read_manifest(path)
            if other.get("step") != main.get("step"):
                return (
                    f"{path.name} is from step {other.get('step')}, {MANIFEST} from step "
                    f"{main.get('step')}: files of two saves are mixed"
                )
            manifests.append(other)
        listed: dict[str, dict] = {}
        for m in manifests:
            for rel, info in m["files"].items():
                if rel.startswith("/") or ".." in rel.split("/"):
                    return f"the manifest names a path outside the checkpoint: {rel!r}"
                if rel in listed and listed[rel] != info:
                    return f"{rel} is listed twice with different contents"
                listed[rel] = {"size": int(info["size"]), "sha256": str(info["sha256"])}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"its manifest is unreadable ({type(exc).__name__}: {exc})"
    present = _files(d)
    for rel, info in listed.items():
        if rel not in present:
            return f"{rel} is missing"
        size = present[rel].stat().st_size
        if size != info["size"]:
            return (
                f"{rel} has {size} bytes, the manifest says {info['size']} (truncated or replaced)"
            )
    extra = sorted(set(present) - set(listed))
    if extra:
        return f"{extra[0]} is not in the manifest (copied in after the save)"
    if hashes:
        for rel, info in listed.items():
            if _sha256(present[rel]) != info["sha256"]:
                return f"{rel} does not match its sha256 in the manifest (changed after the save)"
    return None


# ----------------------------------------------------------------------------- resume
def _say(msg: str) -> None:
    print(f"[kgc] {msg}", flush=True)


def select_checkpoint(latest: Path | None, *, say=_say) -> Path | None:
    """The checkpoint to resume from: `latest` (Ray's) when intact, else the newest intact
    checkpoint_* beside it (its run folder), saying which and why; None (start at step 0)
    when there is no checkpoint at all. Raises KgcError when checkpoints exist but none is
    intact, naming each one's problem."""
    if latest is None:
        return None
    why = checkpoint_problem(latest)
    if why is None:
        return latest
    say(f"checkpoint {latest} is not used: {why}")
    run_dir = latest.parent
    others = [p for p in run_dir.glob(CHECKPOINT_GLOB) if p.is_dir() and p != latest]
    # newest first: by the step its manifest records, then by name (Ray's timestamp)
    others.sort(key=lambda p: (manifest_step(p) or -1, p.name), reverse=True)
    bad = [(latest, why)]
    for p in others:
        w = checkpoint_problem(p)
        if w is None:
            say(f"resuming from {p} (step {manifest_step(p)}), the newest intact checkpoint")
            return p
        say(f"checkpoint {p} is not used: {w}")
        bad.append((p, w))
    if not latest.exists() and not others:
        say(f"{latest} is gone and {run_dir} holds no other checkpoint: starting at step 0")
        return None
    raise KgcError(_none_intact(run_dir, bad))


def _none_intact(run_dir: Path, bad: list[tuple[Path, str]]) -> Problem:
    listed = "; ".join(f"{p.name}: {w}" for p, w in bad)
    return Problem(
        f"run.name={run_dir.name!r} would resume, but no checkpoint in {run_dir} is intact "
        f"({listed}); delete {run_dir} to start the run over, or set run.name to a new name",
    )


def resume_problem(run_dir: Path) -> Problem | None:
    """Driver-side check before any worker starts: a run folder that holds checkpoints of
    which none is intact (sizes only; workers also check sha256)."""
    ckpts = sorted(p for p in run_dir.glob(CHECKPOINT_GLOB) if p.is_dir())
    if not ckpts:
        return None
    bad = []
    for p in ckpts:
        w = checkpoint_problem(p, hashes=False)
        if w is None:
            return None
        bad.append((p, w))
    return _none_intact(run_dir, bad)


# ----------------------------------------------------------------------------- reading one
def resolve_checkpoint(
    checkpoint: str, *, trust_remote_code: bool = False
) -> tuple[ModelConfig, str | None, ChatFormat | None]:
    """(base model config, adapter dir or None, chat format) of a kgc checkpoint directory.
    A full/freeze checkpoint has no adapter: its trained weights are `trained_weights()`.

    The saved `model.trust_remote_code` is ignored: the returned config carries the
    caller's `trust_remote_code` (False unless the operator asked for it)."""
    ckpt = Path(checkpoint)
    cfg_path = ckpt / CONFIG_FILE
    if not cfg_path.exists():
        raise KgcError(f"{ckpt} is not a kgc checkpoint (no {CONFIG_FILE})")
    tree = read_yaml_file(cfg_path)
    saved = tree.get("model") if isinstance(tree, dict) else None
    if not isinstance(saved, dict):
        raise KgcError(
            Problem(
                "has no `model:` mapping; point engine.checkpoint at a kgc checkpoint",
                str(cfg_path),
            )
        )
    saved = dict(saved)
    if saved.pop("trust_remote_code", False) and not trust_remote_code:
        log.warning(
            "%s says model.trust_remote_code=true; ignored: a checkpoint cannot turn on "
            "remote code, only the operator can (HFEngine(trust_remote_code=True))",
            cfg_path,
        )
    try:
        model_cfg = ModelConfig.model_validate({**saved, "trust_remote_code": trust_remote_code})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise KgcError(
            Problem(
                f"model.{where}: {first['msg']}; the checkpoint's config does not fit this kgc "
                "version",
                str(cfg_path),
            )
        ) from None
    wdir = ckpt / WEIGHTS_DIR
    adapter = str(wdir) if (wdir / ADAPTER_CONFIG).exists() else None
    chat = None
    if (ckpt / CHAT_FILE).exists():
        chat = ChatFormat.from_dict(json.loads((ckpt / CHAT_FILE).read_text(encoding="utf-8")))
    return model_cfg, adapter, chat


def adapter_problem(path: str | Path) -> str | None:
    """What a folder lacks to be a loadable peft adapter (its config or its weights), or
    None: peft's own error for a folder without weights is a traceback, not a reason."""
    d = Path(path)
    if not (d / ADAPTER_CONFIG).is_file():
        return f"its folder has no {ADAPTER_CONFIG}"
    if not any((d / f).is_file() for f in ADAPTER_WEIGHT_FILES):
        return (
            f"its folder has {ADAPTER_CONFIG} but no weights file "
            f"({' or '.join(ADAPTER_WEIGHT_FILES)})"
        )
    return None


def trained_weights(checkpoint: str | None) -> Path | None:
    """The full/freeze checkpoint's trained weights file, if it is one."""
    if not checkpoint:
        return None
    f = Path(checkpoint) / WEIGHTS_DIR / TRAINABLE_FILE
    return f if f.is_file() else None
