"""The committed gRPC stubs are what grpcio-tools generates from proto/ today."""

from __future__ import annotations

from converge_ledger import _gen_stubs

from .conftest import REPO

PROTO_DIR = REPO / "proto"
COMMITTED = REPO / "clients/python/src/converge_ledger/_proto"


def test_stubs_are_current(tmp_path):
    written = _gen_stubs.generate(PROTO_DIR, tmp_path)
    assert [p.name for p in written] == list(_gen_stubs.FILES)
    for p in written:
        assert p.read_text() == (COMMITTED / p.name).read_text(), (
            f"{p.name} is stale: run python -m converge_ledger._gen_stubs proto "
            "clients/python/src/converge_ledger/_proto from the repository root"
        )


def test_the_stubs_carry_the_new_get_fields():
    from converge_ledger._proto import context_pb2 as pb

    fields = pb.GetRequest.DESCRIPTOR.fields_by_name
    assert fields["newest_first"].number == 5
    assert fields["before_sequence"].number == 6
    assert fields["key_prefix"].number == 7
