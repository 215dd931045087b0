"""Signed bundles (issue #24): deploy signs with an EC P-256 key, workers given the public key serve
only bundles whose signature verifies; a start-up champion that cannot load is retried; a swapped-out
engine is released. Keys are made by openssl, as an operator would."""

from __future__ import annotations

import gc
import shutil
import subprocess
import time
import weakref
from pathlib import Path

import pytest

from model.bundle import checksum
from model.signing import SIGNATURE_FILE, SignatureError, check_public_key, sign_bundle, verify_bundle
from stream.bundles import Admission, DeploymentError, UntrustedBundle, admit
from stream.retry import Backoff
from tests.stream.test_deploy import copy_with_note, record, serving, version_of

VADER = "vader@3.3.2"


def ec_keypair(out: Path, name: str) -> tuple[Path, Path]:
    """(private, public) PEM files, as `openssl ecparam -name prime256v1 -genkey` makes them."""
    private, public = out / f"{name}.pem", out / f"{name}.pub.pem"
    subprocess.run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-out", str(private)], check=True)
    subprocess.run(
        ["openssl", "ec", "-in", str(private), "-pubout", "-out", str(public)],
        check=True,
        capture_output=True,
    )
    return private, public


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("keys")
    trusted, trusted_pub = ec_keypair(out, "trusted")
    other, other_pub = ec_keypair(out, "other")
    return {"trusted": trusted, "trusted_pub": trusted_pub, "other": other, "other_pub": other_pub}


def signed_copy(bundle: Path, out: Path, key: Path, note: str = "signed") -> Path:
    copy = copy_with_note(bundle, out, note)
    sign_bundle(copy, key)
    return copy


def test_a_signed_bundle_verifies_and_every_tampering_is_refused(
    bundle: Path, keys: dict, tmp_path: Path
) -> None:
    signed = signed_copy(bundle, tmp_path / "signed", keys["trusted"])
    assert (signed / SIGNATURE_FILE).is_file()
    verify_bundle(signed, keys["trusted_pub"])

    with pytest.raises(SignatureError, match="does not verify"):
        verify_bundle(signed, keys["other_pub"])  # signed by another key
    with pytest.raises(SignatureError, match="unsigned"):
        verify_bundle(bundle, keys["trusted_pub"])

    changed = shutil.copytree(signed, tmp_path / "changed")
    (changed / "config.json").write_text((changed / "config.json").read_text() + " ")
    with pytest.raises(SignatureError, match="does not verify"):
        verify_bundle(changed, keys["trusted_pub"])
    added = shutil.copytree(signed, tmp_path / "added")
    (added / "extra.py").write_text("import os")
    with pytest.raises(SignatureError, match="does not verify"):
        verify_bundle(added, keys["trusted_pub"])
    removed = shutil.copytree(signed, tmp_path / "removed")
    (removed / "NOTES.txt").unlink()
    with pytest.raises(SignatureError, match="does not verify"):
        verify_bundle(removed, keys["trusted_pub"])


def test_a_trusted_key_must_be_an_ec_public_key(keys: dict, tmp_path: Path) -> None:
    check_public_key(keys["trusted_pub"])
    (tmp_path / "junk.pem").write_text("not a key")
    for bad in (tmp_path / "junk.pem", tmp_path / "missing.pem", keys["trusted"]):
        with pytest.raises(SignatureError):
            check_public_key(bad)


def test_admit_with_a_trusted_key_serves_only_what_it_signed(
    bundle: Path, keys: dict, tmp_path: Path
) -> None:
    signed = signed_copy(bundle, tmp_path / "signed", keys["trusted"])
    foreign = signed_copy(bundle, tmp_path / "foreign", keys["other"])
    admission = Admission(trusted_key=keys["trusted_pub"])
    assert admit(record(signed, checksum(signed)), tmp_path / "cache", admission) == signed
    for refused in (foreign, bundle):
        with pytest.raises(UntrustedBundle):
            admit(record(refused, checksum(refused)), tmp_path / "cache", admission)
    admit(record(foreign, checksum(foreign)), tmp_path / "cache", Admission())  # no key: as before


def test_admit_refuses_a_uri_outside_the_allowed_prefixes(bundle: Path, tmp_path: Path) -> None:
    inside = shutil.copytree(bundle, tmp_path / "models" / "tiny")
    admission = Admission(uri_prefixes=(str(tmp_path / "models"),))
    assert admit(record(inside, checksum(inside)), tmp_path / "cache", admission) == inside
    escaping = record(inside, checksum(inside)).model_copy(
        update={"uri": str(tmp_path / "models" / ".." / "models-evil")}
    )
    for outside in (record(bundle, checksum(bundle)), escaping):
        with pytest.raises(DeploymentError, match="allowed prefix"):
            admit(outside, tmp_path / "cache", admission)


def test_a_worker_with_a_trusted_key_rejects_an_unsigned_deployment_and_says_why(
    bundle: Path, keys: dict, tmp_path: Path
) -> None:
    models = serving(tmp_path)
    models.require(Admission(trusted_key=keys["trusted_pub"]))
    models.offer("champion", record(bundle, checksum(bundle)))
    models._loader.shutdown(wait=True)
    assert models.take().model_version == VADER and models.swaps == 0
    assert models.rejected["untrusted"] and "unsigned" in models.rejected["reason"]
    assert b'sentistream_model_untrusted_total{role="champion"} 1.0' in models.metrics.render()
    assert models.describe()["signatures"] == "required"
    models.close()


def test_health_shows_no_credentials_or_user_names(bundle: Path, tmp_path: Path) -> None:
    models = serving(tmp_path)
    secret = "s3://alice:hunter2@models.example/tiny?X-Amz-Signature=abc"
    models.deployment = record(bundle, checksum(bundle)).model_copy(
        update={"uri": secret, "deployed_by": "alice@laptop"}
    )
    models.reject("champion", models.deployment, f"cannot fetch {secret}: denied")
    shown = repr(models.describe())
    for leak in ("alice", "hunter2", "X-Amz-Signature", "laptop"):
        assert leak not in shown, leak
    assert "s3://models.example/tiny" in shown
    models.close()


def test_a_champion_that_cannot_load_at_start_is_retried_until_it_serves(
    bundle: Path, tmp_path: Path
) -> None:
    models = serving(tmp_path)
    models.reloads = Backoff(0.1, 300.0)
    late = tmp_path / "mounted-late"
    deployment = record(late, checksum(bundle))  # the volume is not there yet
    models.reject("champion", deployment, "no such bundle directory")
    models.retry("champion", deployment)
    time.sleep(0.3)
    assert models.take().model_version == VADER  # still missing: still retrying
    shutil.copytree(bundle, late)
    deadline = time.monotonic() + 30
    while models.take().model_version == VADER and time.monotonic() < deadline:
        time.sleep(0.1)
    assert models.engine.model_version == version_of(bundle) and models.rejected is None
    models.close()


def test_a_swapped_out_engine_is_released_after_each_of_5_swaps(bundle: Path, tmp_path: Path) -> None:
    """Before #24 the explain service kept the engine it last explained with (and stream/worker/cli.py the
    start-up one): every swap left one more model resident."""
    import asyncio

    import orjson

    from model.settings import ModelSettings
    from stream.worker.explain_view import ExplainService
    from stream.worker.inference import WEB

    models = serving(tmp_path)
    service = ExplainService(
        models.engine, ModelSettings(backend="vader"), current=lambda: (models.engine, models.model_path)
    )
    models.on_swap.append(lambda: service.thread.submit(WEB, service.forget))
    copies = [copy_with_note(bundle, tmp_path / f"v{i}", f"version {i}") for i in range(5)]
    old: list[weakref.ref] = []
    for copy in copies:
        asyncio.run(service.answer(orjson.dumps({"texts": ["explain me"]})))  # holds the serving one
        old.append(weakref.ref(models.engine))
        models.offer("champion", record(copy, checksum(copy)))
        while models.take().model_version != version_of(copy):
            time.sleep(0.05)
        service.thread.submit(WEB, lambda: None).result(10)  # the release ran
        gc.collect()
    alive = [ref() for ref in old[1:] if ref() is not None]  # old[0] is the fixture's VADER
    assert alive == [], f"{len(alive)} swapped-out engines still resident"
    assert models.swaps == 5
    service.close()
    models.close()


def test_export_signs_the_bundle_it_finished(bundle: Path, keys: dict, tmp_path: Path) -> None:
    from sentistream.cli import main

    copy = copy_with_note(bundle, tmp_path / "exported", "to export")
    data = tmp_path / "parity.csv"
    data.write_text("text,label\n" + "".join(f"text number {i} is fine,positive\n" for i in range(20)))
    args = ["export", "--model", str(copy), "--data", str(data), "--calibration-data", str(data)]
    assert main([*args, "--signing-key", str(keys["trusted"])]) == 0
    verify_bundle(copy, keys["trusted_pub"])  # covers the ONNX files and the parity record export wrote
