"""Verification against docs/INTEGRITY.md's test vectors (generated from
src/integrity/vectors.rs by a Rust test, so they are the server's own), an independent
reference proof generator, and tampering."""

from __future__ import annotations

import base64
import hashlib
import re

import pytest

from converge_ledger import Entry, verify
from converge_ledger.verify import VerificationError

from .conftest import REPO

DOC = (REPO / "docs/INTEGRITY.md").read_text()
SECTION = DOC[DOC.index("<!-- BEGIN GENERATED VECTORS") : DOC.index("<!-- END GENERATED VECTORS")]


def _block_after(title: str) -> str:
    at = SECTION.index(title)
    start = SECTION.index("```text\n", at) + len("```text\n")
    return SECTION[start : SECTION.index("```", start)]


def _hashes(title: str) -> list[bytes]:
    return [bytes.fromhex(m) for m in re.findall(r"\] ([0-9a-f]{64})", _block_after(title))]


def _entries() -> tuple[str, list[Entry]]:
    ctx = re.search(r"Context id: `([^`]*)`", SECTION).group(1)
    rows = re.findall(
        r"^\| (\d+) \| `([^`]*)` \| `([^`]*)` \| `([0-9a-f]*)` \| (\d+) \| (\d+) \| (.*) \|$",
        SECTION,
        re.M,
    )
    entries = []
    for seq, id_, key, payload, at, clock, meta in rows:
        md = dict(re.findall(r"`([^`]*)`=`([^`]*)`", meta))
        entries.append(
            Entry(id_, key, bytes.fromhex(payload), int(seq), int(at), md, int(clock), b"")
        )
    return ctx, entries


CTX, ENTRIES = _entries()
CONTENT = _hashes("Content hashes")
LEAVES = _hashes("Leaf hashes")
ROOTS = [bytes.fromhex(h) for h in re.findall(r"size \d+: ([0-9a-f]{64})", _block_after("Roots:"))]


def test_the_vectors_were_parsed():
    assert CTX == "demo-ctx"
    assert len(ENTRIES) == len(CONTENT) == len(LEAVES) == len(ROOTS) == 7
    assert ENTRIES[2].metadata == {"agent": "planner", "priority": "high"}


def test_canonical_bytes_and_content_hashes():
    e = ENTRIES[0]
    canon = verify.canonical_bytes(
        CTX, e.sequence, e.key, e.payload, e.appended_at_ns, e.lamport_clock, e.metadata
    )
    assert canon.hex() == _block_after("Canonical bytes of entry 1").strip()
    for e, want in zip(ENTRIES, CONTENT, strict=True):
        assert verify.content_hash(CTX, e) == want
        signed = Entry(**{**e.__dict__, "content_hash": want})
        verify.verify_entry(CTX, signed)
        with pytest.raises(VerificationError, match="content hash mismatch"):
            verify.verify_entry("other-ctx", signed)  # the context id is hashed in
        tampered = Entry(**{**signed.__dict__, "payload": e.payload + b"!"})
        with pytest.raises(VerificationError):
            verify.verify_entry(CTX, tampered)
    # Metadata order does not matter; moving bytes between fields does.
    e = ENTRIES[6]
    assert verify.content_hash(CTX, Entry(**{**e.__dict__, "metadata": {"b": "2", "a": "1"}})) == CONTENT[6]
    assert verify.content_hash(CTX, Entry(**{**e.__dict__, "metadata": {"a": "12", "b": ""}})) != CONTENT[6]


def test_leaves_roots_and_the_frontier():
    assert [verify.leaf_hash(h) for h in CONTENT] == LEAVES
    f = verify.Frontier()
    assert f.root() == verify.EMPTY_ROOT == hashlib.sha256(b"").digest()
    for n in range(1, 8):
        assert verify.merkle_root(LEAVES[:n]) == ROOTS[n - 1]
        f.push(LEAVES[n - 1])
        assert f.root() == ROOTS[n - 1]


def test_inclusion_vector_and_tampering():
    path = _hashes("Inclusion proof of sequence 5")
    verify.verify_inclusion(LEAVES[4], 4, 7, path, ROOTS[6])
    bad = [path[0], bytes(32), path[2]]
    with pytest.raises(VerificationError, match="root"):
        verify.verify_inclusion(LEAVES[4], 4, 7, bad, ROOTS[6])
    with pytest.raises(VerificationError, match="too short"):
        verify.verify_inclusion(LEAVES[4], 4, 7, path[:2], ROOTS[6])
    with pytest.raises(VerificationError, match="too long"):
        verify.verify_inclusion(LEAVES[4], 4, 7, path + [path[0]], ROOTS[6])
    with pytest.raises(VerificationError):
        verify.verify_inclusion(LEAVES[4], 5, 7, path, ROOTS[6])
    with pytest.raises(VerificationError, match="outside"):
        verify.verify_inclusion(LEAVES[4], 7, 7, path, ROOTS[6])
    with pytest.raises(VerificationError):
        verify.verify_inclusion(LEAVES[3], 4, 7, path, ROOTS[6])


def test_consistency_vector_and_tampering():
    proof = _hashes("Consistency proof from size 3 to size 7")
    verify.verify_consistency(3, 7, ROOTS[2], ROOTS[6], proof)
    for i in range(len(proof)):
        bad = list(proof)
        bad[i] = bytes(32)
        with pytest.raises(VerificationError):
            verify.verify_consistency(3, 7, ROOTS[2], ROOTS[6], bad)
    with pytest.raises(VerificationError):
        verify.verify_consistency(3, 7, ROOTS[3], ROOTS[6], proof)
    with pytest.raises(VerificationError):
        verify.verify_consistency(3, 7, ROOTS[2], ROOTS[5], proof)
    with pytest.raises(VerificationError):
        verify.verify_consistency(3, 7, ROOTS[2], ROOTS[6], proof[:-1])
    with pytest.raises(VerificationError):
        verify.verify_consistency(3, 7, ROOTS[2], ROOTS[6], proof + [proof[0]])
    with pytest.raises(VerificationError):
        verify.verify_consistency(4, 7, ROOTS[3], ROOTS[6], [])
    verify.verify_consistency(7, 7, ROOTS[6], ROOTS[6], [])
    with pytest.raises(VerificationError):
        verify.verify_consistency(7, 7, ROOTS[6], ROOTS[5], [])


# An independent reference: RFC 9162 §2.1.3.1 PATH and §2.1.4.1 PROOF, by the recursion.
def _split(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def _path(m: int, leaves: list[bytes]) -> list[bytes]:
    n = len(leaves)
    if n == 1:
        return []
    k = _split(n)
    if m < k:
        return _path(m, leaves[:k]) + [verify.merkle_root(leaves[k:])]
    return _path(m - k, leaves[k:]) + [verify.merkle_root(leaves[:k])]


def _subproof(m: int, leaves: list[bytes], b: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if b else [verify.merkle_root(leaves)]
    k = _split(n)
    if m <= k:
        return _subproof(m, leaves[:k], b) + [verify.merkle_root(leaves[k:])]
    return _subproof(m - k, leaves[k:], False) + [verify.merkle_root(leaves[:k])]


def test_every_proof_of_trees_up_to_33_leaves_verifies_and_no_tampered_one_does():
    leaves = [verify.leaf_hash(hashlib.sha256(bytes([i])).digest()) for i in range(33)]
    for n in range(1, 34):
        root = verify.merkle_root(leaves[:n])
        for m in range(n):
            p = _path(m, leaves[:n])
            verify.verify_inclusion(leaves[m], m, n, p, root)
            if p:
                with pytest.raises(VerificationError):
                    verify.verify_inclusion(leaves[m], m, n, p[:-1] + [bytes(32)], root)
        # The frontier from the last leaf's path (what a resumed watch starts from).
        f = verify.Frontier.from_last_leaf_proof(n, leaves[n - 1], _path(n - 1, leaves[:n]))
        assert f.root() == root
        for m in range(1, n + 1):
            first = verify.merkle_root(leaves[:m])
            p = _subproof(m, leaves[:n], True) if m < n else []
            verify.verify_consistency(m, n, first, root, p)
            if p:
                with pytest.raises(VerificationError):
                    verify.verify_consistency(m, n, first, root, [bytes(32)] + p[1:])


KEY_LINE = re.search(r"verifier key `([^`]+)`", SECTION).group(1)


def _note() -> bytes:
    return _block_after("Signed checkpoint of size 7").encode()


def test_signed_checkpoint_vector():
    key = verify.VerifierKey.parse(KEY_LINE)
    assert key.name == "demo-ledger" and key.key_id.hex() == "b3642f76"
    cp = verify.verify_checkpoint(_note(), KEY_LINE, CTX)
    assert (cp.origin, cp.tree_size, cp.root) == ("converge-ledger/demo-ctx", 7, ROOTS[6])
    # The signing key (RFC 8032 TEST 1's seed) reproduces the signature byte for byte.
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    seed = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
    body = _note().split(b"\n\n")[0] + b"\n"
    sig = Ed25519PrivateKey.from_private_bytes(seed).sign(body)
    assert base64.b64encode(key.key_id + sig).decode() in _note().decode()


def test_tampered_checkpoints_fail():
    note = _note()
    with pytest.raises(VerificationError, match="origin"):
        verify.verify_checkpoint(note, KEY_LINE, "other-ctx")
    with pytest.raises(VerificationError, match="does not verify"):
        verify.verify_checkpoint(note.replace(b"\n7\n", b"\n8\n"), KEY_LINE)
    text = note.decode()
    sig = text.rsplit(" ", 1)[1].strip()
    raw = bytearray(base64.b64decode(sig))
    raw[10] ^= 1
    with pytest.raises(VerificationError, match="does not verify"):
        verify.verify_checkpoint(text.replace(sig, base64.b64encode(bytes(raw)).decode()).encode(), KEY_LINE)
    # Another signer's line alone is not a signature by the trusted key.
    other = text.replace("— demo-ledger ", "— witness ")
    with pytest.raises(VerificationError, match="no signature"):
        verify.verify_checkpoint(other.encode(), KEY_LINE)
    with pytest.raises(VerificationError):
        verify.VerifierKey.parse(KEY_LINE.replace("b3642f76", "b3642f77"))


def test_origin_escaping():
    assert verify.origin_for("ctx-1") == "converge-ledger/ctx-1"
    assert verify.origin_for("a%b") == "converge-ledger/a%25b"
    assert verify.origin_for("a\nb\x7f") == "converge-ledger/a%0Ab%7F"
