"""The head its query string names (%-decoded, each `|` a line break), then a body of
10 octets: for the fields a backend sends that the server reads or rewrites."""
import os
import sys
from urllib.parse import unquote_to_bytes

head = unquote_to_bytes(os.environ.get("QUERY_STRING", "")).replace(b"|", b"\r\n")
sys.stdout.buffer.write(head + b"\r\n\r\n0123456789")
