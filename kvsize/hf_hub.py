"""Fetching a model's config.json from the Hugging Face Hub (the optional `hub` extra).

Only `config.json` and, when the repository has one,
`model.safetensors.index.json` are downloaded, into the standard Hugging Face
cache, so the weights are never fetched. `huggingface_hub` reads `HF_TOKEN`
for gated repositories. kvsize reads `HF_HUB_OFFLINE`, `HF_HUB_CACHE` and
`HF_HOME` itself at call time and passes them on, because `huggingface_hub`
reads them only once, when it is imported.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from kvsize.errors import InvalidInputError, KvsizeError, NotFoundError, SpecError
from kvsize.hf_config import CONFIG_FILE, INDEX_FILE, HfModelFiles

HUB_PREFIX = "hf:"
_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")


class HubError(KvsizeError):
    """The Hugging Face Hub could not provide a model's config."""


def parse_hub_reference(name: str) -> tuple[str, str | None]:
    """Split `hf:org/name[@revision]` into the repository id and the revision."""
    reference = name[len(HUB_PREFIX):].strip()
    repo_id, _, revision = reference.partition("@")
    if not _REPO_ID.fullmatch(repo_id):
        raise InvalidInputError(f"invalid Hugging Face model id {name!r}; expected hf:ORGANIZATION/NAME, "
                                "optionally followed by @REVISION, e.g. hf:meta-llama/Llama-3.1-8B")  # fmt: skip
    return repo_id, revision or None


def _is_true(value: str | None) -> bool:
    return (value or "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def hub_offline() -> bool:
    """Return whether HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set, read now."""
    return _is_true(os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE"))


def hub_cache_dir() -> Path | None:
    """Return the cache folder HF_HUB_CACHE or HF_HOME names now, or None for the library default."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.path.expanduser(os.environ["HF_HUB_CACHE"]))
    if os.environ.get("HF_HOME"):
        return Path(os.path.expanduser(os.environ["HF_HOME"])) / "hub"
    return None


def fetch_model_files(name: str) -> HfModelFiles:
    """Download (or find in the cache) the config.json and safetensors index of `hf:org/name`."""
    repo_id, revision = parse_hub_reference(name)
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import (
            EntryNotFoundError,
            GatedRepoError,
            HfHubHTTPError,
            LocalEntryNotFoundError,
            OfflineModeIsEnabled,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )
    except ImportError:
        raise HubError(f"{name}: reading models from the Hugging Face Hub needs the optional 'hub' extra; "
                       "run: pip install 'kvsize[hub]'. Or download config.json and pass its path") from None

    offline = hub_offline()
    cache_dir = hub_cache_dir()
    where = f" at revision {revision}" if revision else ""
    download_hint = (f"run 'hf download {repo_id} {CONFIG_FILE} {INDEX_FILE}' where the Hub is reachable, "
                     f"or download {CONFIG_FILE} and pass its path")  # fmt: skip

    def download(filename: str) -> Path:
        return Path(hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache_dir,
                                    local_files_only=offline))  # fmt: skip

    try:
        config_path = download(CONFIG_FILE)
    except GatedRepoError:
        raise HubError(f"{name}: the repository is gated; accept its licence on the Hub and set HF_TOKEN "
                       "to a token with access") from None
    except RepositoryNotFoundError:
        raise NotFoundError(f"{name}: repository {repo_id} not found on the Hugging Face Hub (or it is private: "
                            "set HF_TOKEN)") from None
    except RevisionNotFoundError:
        raise NotFoundError(f"{name}: revision {revision!r} not found in {repo_id}") from None
    except (LocalEntryNotFoundError, OfflineModeIsEnabled):
        state = "HF_HUB_OFFLINE is set" if offline else "the Hub could not be reached"
        cache = cache_dir or "the default Hugging Face cache"
        raise HubError(f"{name}: {CONFIG_FILE}{where} is not in {cache} and {state}; {download_hint}") from None
    except EntryNotFoundError:
        raise SpecError(f"{name}: repository {repo_id}{where} has no {CONFIG_FILE}; kvsize reads "
                        "transformers-format repositories (for GGUF-only repositories, download the .gguf "
                        "file and pass its path)") from None
    except HfHubHTTPError as error:
        raise HubError(f"{name}: the Hugging Face Hub request for {CONFIG_FILE} failed: {error}") from None

    index_path: Path | None
    try:
        index_path = download(INDEX_FILE)
    except (EntryNotFoundError, OfflineModeIsEnabled):
        # Single-file checkpoints have no index, and offline an index that was never cached looks the same.
        index_path = None
    except HfHubHTTPError as error:
        raise HubError(f"{name}: the Hugging Face Hub request for {INDEX_FILE} failed: {error}") from None

    files = HfModelFiles.beside(config_path, display_path=f"{name} ({config_path})")
    files.index_path = index_path
    files.hf_id = repo_id
    files.revision = config_path.parent.name
    return files
