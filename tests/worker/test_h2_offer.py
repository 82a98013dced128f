"""What becomes of an h2c offer (Upgrade: h2c) the server does not act on, and of the
Connection field of one it takes, as lighttpd 1.4.69's h2_check_con_upgrade_h2c and
http_header_remove_token leave them (the strings below are lighttpd's, spaces and all:
a backend sees them in HTTP_CONNECTION)."""

from __future__ import annotations

import pytest

from worker.h2_offer import drop_h2c_offer, drop_offer_tokens


@pytest.mark.parametrize("fields, left", [
    ({"upgrade": "h2c", "connection": "keep-alive, Upgrade"}, {"connection": "keep-alive"}),
    ({"upgrade": "h2c", "connection": "Upgrade, close"}, {"connection": "         close"}),
    ({"upgrade": "h2c", "connection": "Upgrade"}, {"connection": ""}),
    ({"upgrade": "h2c", "connection": "close, Upgrade,"}, {"connection": "close,         "}),
    ({"upgrade": "h2c", "connection": "upgrade, upgrade"}, {"connection": ""}),
    ({"upgrade": "h2c", "connection": "a,upgrade;q=1,b"}, {"connection": "a,       ;q=1 b"}),
    ({"upgrade": "h2c", "connection": "UpgradeX, x"}, {"connection": "UpgradeX, x"}),
    ({"upgrade": "foo, H2C", "connection": "Upgrade, HTTP2-Settings, close",
      "http2-settings": "AAMAAABkAAQAAP__"}, {"connection": "                         close"}),
    ({"upgrade": "h2c"}, {}),                             # no Connection: the Upgrade goes
    ({"upgrade": "websocket"}, {}),
    ({"upgrade": "websocket", "connection": "Upgrade"},   # another protocol's offer stays
     {"upgrade": "websocket", "connection": "Upgrade"}),
])
def test_an_offer_not_taken_is_dropped_as_lighttpd_drops_it(fields, left):
    drop_h2c_offer(fields)
    assert fields == left


def test_a_taken_offer_keeps_its_fields_but_connection_loses_their_tokens():
    fields = {"upgrade": "h2c", "http2-settings": "AAMAAABkAAQAAP__",
              "connection": "HTTP2-Settings, keep-alive, Upgrade"}
    drop_offer_tokens(fields)
    assert fields == {"upgrade": "h2c", "http2-settings": "AAMAAABkAAQAAP__",
                      "connection": "                keep-alive"}
