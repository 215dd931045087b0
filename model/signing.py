"""Signed bundles: an OpenSSF model-signing signature (`model.sig`) inside the bundle directory.

`sign_bundle(BUNDLE, KEY.pem)` hashes every file of the bundle (except the signature itself) into a
manifest and signs it with an EC P-256 private key (`openssl ecparam -name prime256v1 -genkey`);
`verify_bundle(BUNDLE, PUB.pem)` refuses a bundle that is unsigned, signed by another key, or whose
files changed, were added or were removed after signing. The format is model-signing's own (a
Sigstore bundle with a DSSE envelope, no transparency log), so `model_signing verify key` checks it
too. Workers given a trusted key serve only bundles that verify (stream/control.py `admit`).
"""

from __future__ import annotations

from pathlib import Path

from sentistream.errors import UsageError

SIGNATURE_FILE = "model.sig"


class SignatureError(UsageError):
    """A bundle that is not signed by the trusted key, or a key that cannot be used (exit 2)."""


def sign_bundle(bundle: str | Path, private_key: str | Path) -> Path:
    """Sign every file of `bundle` with `private_key` (EC PEM); returns the signature's path."""
    from model_signing import signing

    bundle, signature = Path(bundle), Path(bundle) / SIGNATURE_FILE
    _readable(private_key, "signing key")
    try:
        config = signing.Config().use_elliptic_key_signer(private_key=Path(private_key))
        config.set_hashing_config(_hashing()).sign(bundle, signature)
    except Exception as exc:  # a key that is not EC, a password-protected one, an unreadable file
        raise SignatureError(
            f"cannot sign {bundle} with {private_key}: {type(exc).__name__}: {exc}; "
            "use an EC P-256 key (openssl ecparam -name prime256v1 -genkey -noout -out key.pem)"
        ) from None
    return signature


def verify_bundle(bundle: str | Path, public_key: str | Path) -> None:
    """Nothing when `bundle` carries a signature by `public_key` over exactly its files; else
    SignatureError saying why (unsigned, another key, files changed after signing)."""
    from model_signing import verifying

    signature = Path(bundle) / SIGNATURE_FILE
    if not signature.is_file():
        raise SignatureError(f"unsigned: {SIGNATURE_FILE} is missing (sign it: deploy --signing-key)")
    try:
        config = verifying.Config().use_elliptic_key_verifier(public_key=Path(public_key))
        config.set_hashing_config(_hashing()).verify(Path(bundle), signature)
    except Exception as exc:  # wrong key, tampered files, a malformed signature
        raise SignatureError(f"signature does not verify: {_first_line(exc)}") from None


def check_public_key(public_key: str | Path) -> None:
    """UsageError unless `public_key` is a readable EC public key in PEM (checked at start)."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    data = _readable(public_key, "trusted key")
    try:
        key = load_pem_public_key(data)
    except ValueError:
        key = None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise SignatureError(
            f"trusted key {public_key} is not an EC public key in PEM; make it with "
            "`openssl ec -in key.pem -pubout -out pub.pem`"
        )


def _hashing():
    from model_signing import hashing

    # The signature cannot cover itself; .git and friends are never part of a bundle.
    return hashing.Config().set_ignored_paths(paths=[SIGNATURE_FILE], ignore_git_paths=True)


def _readable(path: str | Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise SignatureError(f"cannot read the {what} {path}: {exc.strerror}") from None


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:300]
