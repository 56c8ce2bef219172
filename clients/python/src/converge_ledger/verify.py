"""Pure-Python verification of what a Converge Ledger serves (docs/INTEGRITY.md).

Content hashes over the canonical bytes of an entry, RFC 9162 Merkle roots (also
incrementally, with a frontier of at most 64 hashes), RFC 9162 §2.1.3 inclusion and §2.1.4
consistency proofs, and C2SP signed-note checkpoints (Ed25519). Only hashlib, base64 and,
for signatures, the `cryptography` package: none of the server's code.

Every check raises `VerificationError` with a message saying what did not match.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .types import Entry

EMPTY_ROOT = hashlib.sha256(b"").digest()
ORIGIN_PREFIX = "converge-ledger/"
_EM_DASH = "\u2014"


class VerificationError(Exception):
    """Something the ledger served does not verify."""


def _u32(n: int) -> bytes:
    return struct.pack(">I", n)


def _u64(n: int) -> bytes:
    return struct.pack(">Q", n)


def _lp(b: bytes) -> bytes:
    return _u32(len(b)) + b


def canonical_bytes(
    context_id: str,
    sequence: int,
    key: str,
    payload: bytes,
    appended_at_ns: int,
    lamport_clock: int,
    metadata: Mapping[str, str],
) -> bytes:
    """The canonical bytes of an entry (docs/INTEGRITY.md, "Canonical bytes")."""
    pairs = sorted((k.encode(), v.encode()) for k, v in metadata.items())
    out = [
        _lp(context_id.encode()),
        _u64(sequence),
        _lp(key.encode()),
        _lp(bytes(payload)),
        _u64(appended_at_ns),
        _u64(lamport_clock),
        _u32(len(pairs)),
    ]
    for k, v in pairs:
        out.append(_lp(k))
        out.append(_lp(v))
    return b"".join(out)


def content_hash(context_id: str, entry: Entry) -> bytes:
    """SHA-256 of the entry's canonical bytes in `context_id`."""
    return hashlib.sha256(
        canonical_bytes(
            context_id,
            entry.sequence,
            entry.key,
            entry.payload,
            entry.appended_at_ns,
            entry.lamport_clock,
            entry.metadata,
        )
    ).digest()


def verify_entry(context_id: str, entry: Entry) -> None:
    """Checks that the entry's `content_hash` is the hash of its fields."""
    got = content_hash(context_id, entry)
    if got != entry.content_hash:
        raise VerificationError(
            f"sequence {entry.sequence}: content hash mismatch: the entry's fields hash to "
            f"{got.hex()}, the server sent {entry.content_hash.hex()}"
        )


def leaf_hash(content: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + content).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """MTH over leaf hashes, by the RFC 9162 §2.1.1 recursion."""
    n = len(leaves)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return leaves[0]
    k = 1
    while k * 2 < n:
        k *= 2
    return node_hash(merkle_root(leaves[:k]), merkle_root(leaves[k:]))


class Frontier:
    """The complete subtrees of a tree of `size` leaves, largest first: enough to append a
    leaf and compute the root in O(log n) (docs/INTEGRITY.md, "How the server keeps it
    cheap")."""

    def __init__(self, size: int = 0, subtrees: Sequence[bytes] = ()) -> None:
        if len(subtrees) != bin(size).count("1"):
            raise VerificationError(
                f"a frontier of size {size} has {bin(size).count('1')} subtrees, "
                f"not {len(subtrees)}"
            )
        self.size = size
        self._subtrees = list(subtrees)

    @classmethod
    def from_last_leaf_proof(cls, size: int, leaf: bytes, path: Sequence[bytes]) -> Frontier:
        """The frontier at `size` from the inclusion proof of its last leaf (index size-1)
        in the tree of `size`: that path is the frontier at size-1, smallest first."""
        if size < 1:
            raise VerificationError("a last-leaf proof needs a tree of at least one leaf")
        f = cls(size - 1, list(reversed(path)))
        f.push(leaf)
        return f

    def push(self, leaf: bytes) -> None:
        """Appends a leaf hash."""
        node = leaf
        size = self.size
        while size & 1:
            node = node_hash(self._subtrees.pop(), node)
            size >>= 1
        self._subtrees.append(node)
        self.size += 1

    def root(self) -> bytes:
        if not self._subtrees:
            return EMPTY_ROOT
        node = self._subtrees[-1]
        for left in reversed(self._subtrees[:-1]):
            node = node_hash(left, node)
        return node

    def copy(self) -> Frontier:
        return Frontier(self.size, list(self._subtrees))


def verify_inclusion(
    leaf: bytes, leaf_index: int, tree_size: int, path: Sequence[bytes], root: bytes
) -> None:
    """RFC 9162 §2.1.3.2: `path` proves leaf hash `leaf` at `leaf_index` under `root`."""
    if leaf_index >= tree_size or leaf_index < 0:
        raise VerificationError(f"leaf index {leaf_index} is outside a tree of size {tree_size}")
    fn, sn = leaf_index, tree_size - 1
    r = leaf
    for p in path:
        if sn == 0:
            raise VerificationError(
                f"inclusion path too long: {len(path)} hashes for leaf {leaf_index} "
                f"of a tree of size {tree_size}"
            )
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise VerificationError(
            f"inclusion path too short: {len(path)} hashes for leaf {leaf_index} "
            f"of a tree of size {tree_size}"
        )
    if r != root:
        raise VerificationError(
            f"inclusion proof gives root {r.hex()}, expected {root.hex()} "
            f"(leaf {leaf_index}, tree size {tree_size})"
        )


def verify_consistency(
    first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]
) -> None:
    """RFC 9162 §2.1.4.2: `proof` shows the tree of `second` extends the tree of `first`."""
    if first < 1 or first > second:
        raise VerificationError(
            f"bad sizes for a consistency proof: first {first}, second {second}"
        )
    if first == second:
        if proof:
            raise VerificationError("equal sizes need an empty consistency proof")
        if first_root != second_root:
            raise VerificationError(
                f"equal sizes but different roots: {first_root.hex()} and {second_root.hex()}"
            )
        return
    if not proof:
        raise VerificationError("empty consistency proof for different sizes")
    path = list(proof)
    if first & (first - 1) == 0:  # a power of two: its root is the first node
        path.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise VerificationError("consistency proof too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise VerificationError("consistency proof too short")
    if fr != first_root:
        raise VerificationError(
            f"consistency proof gives first root {fr.hex()}, expected {first_root.hex()}"
        )
    if sr != second_root:
        raise VerificationError(
            f"consistency proof gives second root {sr.hex()}, expected {second_root.hex()}"
        )


# --- C2SP checkpoints --------------------------------------------------------------------


def origin_for(context_id: str) -> str:
    """The checkpoint origin line of a context: `%`, controls and DEL escaped as %XX."""
    out = []
    for ch in context_id:
        if ch == "%" or ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"%{ord(ch):02X}")
        else:
            out.append(ch)
    return ORIGIN_PREFIX + "".join(out)


@dataclass(frozen=True)
class VerifierKey:
    """A signed-note verifier key: `name+hexid+base64(0x01 ‖ Ed25519 public key)`."""

    name: str
    key_id: bytes
    public_key: bytes

    @classmethod
    def parse(cls, text: str) -> VerifierKey:
        parts = text.strip().split("+", 2)
        if len(parts) != 3:
            raise VerificationError(f"a verifier key is name+keyid+key, not {text.strip()!r}")
        name, hex_id, b64 = parts
        try:
            raw = base64.b64decode(b64, validate=True)
            key_id = bytes.fromhex(hex_id)
        except ValueError as e:
            raise VerificationError(f"verifier key {text.strip()!r}: {e}") from None
        if len(raw) != 33 or raw[0] != 1:
            raise VerificationError("verifier key: expected 0x01 and a 32-byte Ed25519 key")
        want = cls.key_id_for(name, raw[1:])
        if len(key_id) != 4 or key_id != want:
            raise VerificationError(
                f"verifier key {name!r}: key id {hex_id} does not match the key ({want.hex()})"
            )
        return cls(name, key_id, raw[1:])

    @staticmethod
    def key_id_for(name: str, public_key: bytes) -> bytes:
        return hashlib.sha256(name.encode() + b"\n\x01" + public_key).digest()[:4]


@dataclass(frozen=True)
class Checkpoint:
    """A verified checkpoint body."""

    origin: str
    tree_size: int
    root: bytes


def parse_checkpoint_body(body: bytes) -> Checkpoint:
    try:
        text = body.decode()
    except UnicodeDecodeError:
        raise VerificationError("checkpoint body is not UTF-8") from None
    lines = text.split("\n")
    if len(lines) < 4 or lines[-1] != "":
        raise VerificationError("checkpoint body: expected origin, size and root lines")
    origin, size, root_b64 = lines[0], lines[1], lines[2]
    if not size.isdigit() or (size != "0" and size.startswith("0")) or not size.isascii():
        raise VerificationError(f"checkpoint body: bad tree size {size!r}")
    try:
        root = base64.b64decode(root_b64, validate=True)
    except ValueError:
        raise VerificationError(f"checkpoint body: bad root {root_b64!r}") from None
    if len(root) != 32:
        raise VerificationError(f"checkpoint body: the root has {len(root)} bytes, not 32")
    return Checkpoint(origin, int(size), root)


def verify_checkpoint(
    note: bytes, key: VerifierKey | str, context_id: str | None = None
) -> Checkpoint:
    """Verifies a signed note by `key` and returns its body; with `context_id`, also that
    the origin is that context's. A note without a valid signature by `key` fails."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    if isinstance(key, str):
        key = VerifierKey.parse(key)
    try:
        text = note.decode()
    except UnicodeDecodeError:
        raise VerificationError("signed note is not UTF-8") from None
    at = text.rfind("\n\n")
    if at < 0:
        raise VerificationError("signed note: no blank line before the signatures")
    body = text[: at + 1].encode()
    sig_lines = text[at + 2 :].split("\n")
    if sig_lines and sig_lines[-1] == "":
        sig_lines.pop()
    verified = False
    for line in sig_lines:
        if not line.startswith(_EM_DASH + " "):
            raise VerificationError(f"signed note: bad signature line {line!r}")
        fields = line[2:].split(" ")
        if len(fields) != 2:
            raise VerificationError(f"signed note: bad signature line {line!r}")
        name, b64 = fields
        try:
            raw = base64.b64decode(b64, validate=True)
        except ValueError:
            raise VerificationError(f"signed note: bad base64 in {line!r}") from None
        if len(raw) < 5 or name != key.name or raw[:4] != key.key_id:
            continue  # another signer's line (a witness): ignored
        if len(raw) != 4 + 64:
            raise VerificationError("signed note: an Ed25519 signature has 64 bytes")
        try:
            Ed25519PublicKey.from_public_bytes(key.public_key).verify(raw[4:], body)
        except InvalidSignature:
            raise VerificationError(
                f"signed note: the signature by {key.name!r} does not verify"
            ) from None
        verified = True
    if not verified:
        raise VerificationError(f"signed note: no signature by {key.name!r} ({key.key_id.hex()})")
    cp = parse_checkpoint_body(body)
    if context_id is not None and cp.origin != origin_for(context_id):
        raise VerificationError(
            f"checkpoint origin {cp.origin!r} is not context {context_id!r}'s "
            f"({origin_for(context_id)!r})"
        )
    return cp
