"""Model bundles a deployment names: where they may come from, fetching them by URI into a cache by
checksum, what a worker requires before it serves one (`Admission`), and the smoke check every
candidate passes (`load_verified`). Used by `sentistream deploy` and by every worker.

A bundle is a local path (a mounted volume) or any URI fsspec reads (s3://, gs://, https://, ...),
copied once into a local cache named by its checksum.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from model.bundle import checksum
from sentistream.errors import UsageError
from stream.events import HISTORY_KEPT, Deployment, ModelRef

if TYPE_CHECKING:
    from model.engines.base import Engine
    from model.settings import ModelSettings

# Scored by every candidate before it serves: a bundle that cannot score these never replaces one that can.
SMOKE_TEXTS = [
    "I love this, it works perfectly and the support team was great!",
    "This is the worst update ever, everything is broken and slow.",
    "The package arrived on Tuesday.",
]


class DeploymentError(UsageError):
    """A bundle that must not serve: it does not load, does not score or is not what was deployed (exit 2)."""


def deployer() -> str:
    """`user@host`, recorded with every deployment."""
    try:
        user = getpass.getuser()
    except Exception:  # no user name in a bare container
        user = str(os.getuid()) if hasattr(os, "getuid") else "unknown"
    return f"{user}@{socket.gethostname()}"


def is_remote(uri: str) -> bool:
    """True for a URI fsspec must fetch; False for a local path (or file://)."""
    scheme = urlsplit(uri).scheme
    return len(scheme) > 1 and scheme != "file"  # one letter: a Windows drive


def local_path(uri: str) -> Path:
    """The local directory a non-remote `uri` names."""
    return Path(uri.removeprefix("file://")).expanduser()


def redacted(uri: str) -> str:
    """`uri` without user, password or query (a signed URL's token): safe for /health and logs."""
    if not is_remote(uri):
        return uri
    parts = urlsplit(uri)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


DEFAULT_MAX_BUNDLE_BYTES = 8 << 30  # a large transformer with its ONNX and int8 files fits
DEFAULT_CACHE_KEEP = 3  # cached bundles kept: the serving one, a rollback target, a challenger


def fetch(
    uri: str,
    cache_dir: Path,
    expected: str | None = None,
    max_bytes: int = DEFAULT_MAX_BUNDLE_BYTES,
    keep: int = DEFAULT_CACHE_KEEP,
) -> Path:
    """A local directory holding the bundle at `uri`: the path itself, or a copy in
    `cache_dir/<checksum>` made once per checksum. DeploymentError when its files' checksum is not
    `expected` (the bundle changed after it was deployed), when `expected` is not a sha256 (it
    names a cache directory), or when the remote bundle is over `max_bytes`. The cache keeps the
    `keep` bundles used last."""
    if expected is not None and not _is_sha256(expected):
        raise DeploymentError(f"{redacted(uri)}: the expected checksum is not a sha256 hex digest")
    if not is_remote(uri):
        path = local_path(uri)
        if not path.is_dir():
            raise DeploymentError(f"{uri}: no such bundle directory")
        return _checked(path, uri, expected)
    cached = cache_dir / expected if expected else None
    if cached is not None and cached.is_dir():
        os.utime(cached)  # used now: pruned last
        return cached
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".fetch-", dir=cache_dir))
    try:
        target = _download(uri, staging, cache_dir, expected, max_bytes)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    prune_cache(cache_dir, keep, target)
    return target


def _download(uri: str, staging: Path, cache_dir: Path, expected: str | None, max_bytes: int) -> Path:
    import fsspec

    shown = redacted(uri)
    try:
        fs, root = fsspec.core.url_to_fs(uri)
        size = fs.du(root, total=True)
        if size > max_bytes:
            raise DeploymentError(f"{shown}: {size:,} bytes is over the {max_bytes:,}-byte bundle cap")
        fs.get(root.rstrip("/") + "/", str(staging) + "/", recursive=True)
    except DeploymentError:
        raise
    except Exception as exc:  # any fsspec backend error: not found, denied, no such protocol
        raise DeploymentError(f"cannot fetch {shown}: {type(exc).__name__}") from None
    # The listing may lie or change under us: the bytes on disk are what counts.
    fetched = sum(p.stat().st_size for p in staging.rglob("*") if p.is_file())
    if fetched > max_bytes:
        raise DeploymentError(f"{shown}: {fetched:,} bytes is over the {max_bytes:,}-byte bundle cap")
    digest = checksum(staging)
    if expected and digest != expected:
        raise DeploymentError(f"{shown}: checksum {digest[:12]} is not the deployed {expected[:12]}")
    target = cache_dir / digest
    if not target.exists():
        staging.rename(target)
    os.utime(target)
    return target


def prune_cache(cache_dir: Path, keep: int, used: Path) -> None:
    """Remove all but the `keep` bundles of `cache_dir` used last (`used` always stays)."""
    bundles = [p for p in cache_dir.iterdir() if p.is_dir() and _is_sha256(p.name) and p != used]
    bundles.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    for stale in bundles[max(keep - 1, 0) :]:
        shutil.rmtree(stale, ignore_errors=True)


def _is_sha256(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def _checked(path: Path, uri: str, expected: str | None) -> Path:
    if expected:
        digest = checksum(path)
        if digest != expected:
            raise DeploymentError(
                f"{uri}: checksum {digest[:12]} is not the deployed {expected[:12]} (the files changed "
                "after `sentistream deploy`; deploy the bundle again)"
            )
    return path


@dataclass(frozen=True)
class Admission:
    """What a worker requires of a deployment before it loads it (WorkerSettings, read at start).

    `trusted_key`: serve only bundles signed by it (None: any bundle whose checksum matches, which
    means whoever can write to the control topic decides what is served). `uri_prefixes`: where
    bundles may come from (empty: anywhere a record may point). `max_bundle_bytes`, `cache_keep`:
    see `fetch`.
    """

    trusted_key: Path | None = None
    uri_prefixes: tuple[str, ...] = ()
    max_bundle_bytes: int = DEFAULT_MAX_BUNDLE_BYTES
    cache_keep: int = DEFAULT_CACHE_KEEP


def admit(deployment: ModelRef, cache_dir: Path, admission: Admission) -> Path:
    """The local directory of `deployment`'s bundle, once its URI is allowed, its files match the
    recorded checksum and, with a trusted key, its signature verifies; DeploymentError otherwise."""
    if admission.uri_prefixes and not allowed(deployment.uri, admission.uri_prefixes):
        raise DeploymentError(
            f"{redacted(deployment.uri)} is not under an allowed prefix ({', '.join(admission.uri_prefixes)})"
        )
    path = fetch(
        deployment.uri, cache_dir, deployment.checksum, admission.max_bundle_bytes, admission.cache_keep
    )
    if admission.trusted_key is not None:
        from model.signing import SignatureError, verify_bundle

        try:
            verify_bundle(path, admission.trusted_key)
        except SignatureError as exc:
            raise UntrustedBundle(f"{redacted(deployment.uri)}: {exc}") from None
    return path


class UntrustedBundle(DeploymentError):
    """A bundle whose signature does not verify against the worker's trusted key."""


def allowed(uri: str, prefixes: tuple[str, ...]) -> bool:
    """True when `uri`, normalised (no `..` escapes a prefix), starts with one of `prefixes`."""
    if is_remote(uri):
        if ".." in urlsplit(uri).path.split("/"):
            return False
        target = uri
    else:
        target = os.path.normpath(local_path(uri))
    return any(target == p.rstrip("/") or target.startswith(p.rstrip("/") + "/") for p in prefixes)


def load_verified(path: Path, model_settings: ModelSettings) -> Engine:
    """The engine of the bundle at `path`, after it scored `SMOKE_TEXTS`; DeploymentError otherwise."""
    # A worker scoring with VADER (no model) loads a deployed bundle with the best backend for it.
    backend = model_settings.backend if model_settings.backend in ("onnx", "torch") else "auto"
    try:
        engine = model_settings.model_copy(update={"model": str(path), "backend": backend}).load_engine()
    except Exception as exc:  # missing files, bad weights, wrong label count: one line
        raise DeploymentError(f"{path} does not load: {type(exc).__name__}: {exc}") from None
    try:
        predictions = engine.predict(SMOKE_TEXTS)
    except Exception as exc:  # the model raised on ordinary texts
        engine.close()
        raise DeploymentError(f"{path} loads but raised {type(exc).__name__} scoring a smoke batch") from None
    broken = [
        p.error or f"label {p.label!r}" for p in predictions if not p.ok or p.label not in engine.labels
    ]
    if len(predictions) != len(SMOKE_TEXTS) or broken:
        engine.close()
        raise DeploymentError(f"{path} loads but does not score a smoke batch: {broken[:1] or predictions}")
    return engine


def new_deployment(uri: str, path: Path, engine: Engine, history: list[ModelRef]) -> Deployment:
    """The control-topic record for `engine`, loaded from `path` (fetched from `uri`)."""
    return Deployment(
        uri=uri,
        model=engine.name,
        model_version=engine.model_version,
        checksum=checksum(path),
        deployed_by=deployer(),
        deployed_at=datetime.now(UTC),
        history=history[:HISTORY_KEPT],
    )
