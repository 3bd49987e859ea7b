"""The gateway's settings, as read from the environment."""
from __future__ import annotations

import pytest

from api.gateway.config import GatewaySettings


def test_the_upstream_ca_setting_is_read_and_checked(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("")
    assert GatewaySettings.from_env({"TOKENTILL_GATEWAY_UPSTREAM_CA": str(ca)}).upstream_ca == str(ca)
    assert GatewaySettings.from_env({}).upstream_ca is None
    with pytest.raises(SystemExit, match="TOKENTILL_GATEWAY_UPSTREAM_CA"):
        GatewaySettings.from_env({"TOKENTILL_GATEWAY_UPSTREAM_CA": str(tmp_path / "missing.pem")})

