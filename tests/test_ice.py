"""ICE servers (``streamer.server.ice``) and their configuration (``[ice]``, ``IceConfig``):
TURN REST credentials as coturn checks them, the older ``server.stun_url`` still honoured,
RFC 9725 ``Link`` headers, and each configuration mistake one clear error."""

from __future__ import annotations

import pytest

from msadtalker.errors import ConfigError
from streamer.config import TURN_SECRET_ENV, load_config
from streamer.server.ice import IceServer, as_json, ice_servers, link_headers, turn_rest_credential

SECRET = "0123456789abcdef0123"
TURN = "turn:192.0.2.1:3478?transport=udp"


def test_turn_rest_credentials_are_coturns() -> None:
    # echo -n "1700000000:msadtalker" | openssl dgst -sha1 -hmac $SECRET -binary | base64
    assert turn_rest_credential(SECRET, "msadtalker", 1_700_000_000) == (
        "1700000000:msadtalker",
        "SMFR7iuIUpwvrSdSFN/ae4zrryk=",
    )


def test_servers_stun_first_then_turn_minted_for_now() -> None:
    config = load_config(
        overrides={
            "server.stun_url": "stun:192.0.2.9:3478",  # the older key joins the list
            "ice.stun_urls": ["stun:192.0.2.8:3478", "stun:192.0.2.9:3478"],
            "ice.turn_urls": [TURN],
            "ice.turn_secret": SECRET,
            "ice.turn_ttl_s": 600,
        },
        environ={},
    )
    stun, turn = ice_servers(config, now=1_699_999_400.5)
    assert stun == IceServer(("stun:192.0.2.8:3478", "stun:192.0.2.9:3478"))
    assert turn == IceServer((TURN,), "1700000000:msadtalker", "SMFR7iuIUpwvrSdSFN/ae4zrryk=")
    later = ice_servers(config, now=1_700_000_000.0)[1]
    assert later.username == "1700000600:msadtalker" and later.credential != turn.credential
    assert as_json([stun])[0] == {"urls": ["stun:192.0.2.8:3478", "stun:192.0.2.9:3478"]}


def test_nothing_configured_is_no_servers() -> None:
    assert ice_servers(load_config(environ={}), now=0.0) == ()


def test_static_credentials_and_link_quoting() -> None:
    config = load_config(
        overrides={
            "ice.turn_urls": [TURN],
            "ice.turn_username": 'an "odd" \\ user',
            "ice.turn_credential": "pass-word",
        },
        environ={},
    )
    (turn,) = ice_servers(config, now=0.0)
    assert link_headers([turn]) == [
        f'<{TURN}>; rel="ice-server"; username="an \\"odd\\" \\\\ user"; '
        'credential="pass-word"; credential-type="password"'
    ]


def test_the_environment_supplies_the_turn_secret() -> None:
    config = load_config(overrides={"ice.turn_urls": [TURN]}, environ={TURN_SECRET_ENV: SECRET})
    assert config.ice.turn_secret == SECRET and SECRET not in repr(config.ice)


@pytest.mark.parametrize(
    ("overrides", "pattern"),
    [
        ({"ice.stun_urls": ["http://stun.example"]}, "not a stun:host"),
        ({"ice.turn_urls": ["turn:h:3478?transport=sctp"], "ice.turn_secret": SECRET}, "turn"),
        ({"ice.turn_urls": [TURN]}, "need turn_secret or turn_username"),
        ({"ice.turn_urls": [TURN], "ice.turn_username": "u"}, "go together"),
        ({"ice.turn_secret": SECRET}, "turn_urls is empty"),
        ({"ice.turn_urls": [TURN], "ice.turn_secret": "short"}, ">= 16"),
        (
            {
                "ice.turn_urls": [TURN],
                "ice.turn_secret": SECRET,
                "ice.turn_username": "u",
                "ice.turn_credential": "c",
            },
            "either turn_secret",
        ),
        ({"ice.turn_user": "a:b"}, "without ':'"),
        ({"ice.turn_ttl_s": 0}, "turn_ttl_s"),
    ],
)
def test_configuration_mistakes_name_the_key(overrides: dict[str, object], pattern: str) -> None:
    with pytest.raises(ConfigError, match=r"\[ice\].*" + pattern):
        load_config(overrides=overrides, environ={})
