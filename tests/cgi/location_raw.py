"""A local redirect to a path of raw UTF-8 octets (the query string, %-decoded), as an
application may write its Location."""
import os
import sys
from urllib.parse import unquote_to_bytes

sys.stdout.buffer.write(b"Location: " + unquote_to_bytes(os.environ.get("QUERY_STRING", ""))
                        + b"\r\n\r\n")
