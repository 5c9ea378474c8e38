"""The committed authz_service/_proto matches what `make protos` generates from protos/."""

import subprocess
import sys
from pathlib import Path

from authz_service._proto.gateway.admin.v1 import admin_pb2, admin_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]


def test_generated_proto_code_is_fresh() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gen_protos.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_admin_service_stubs_import() -> None:
    methods = admin_pb2.DESCRIPTOR.services_by_name["GatewayAdmin"].methods_by_name
    assert set(methods) >= {
        "Explain",
        "Budget",
        "Reload",
    }
    assert hasattr(admin_pb2_grpc, "GatewayAdminServicer")
