"""X-Sendfile with a file name's raw UTF-8 octets (not %-encoded), as a PHP application
writes it: the name is the query string, %-decoded, in the sendable directory beside
the docroot."""
import os
import sys
from urllib.parse import unquote_to_bytes

name = unquote_to_bytes(os.environ.get("QUERY_STRING", ""))
root = os.environ["DOCUMENT_ROOT"].encode()
sys.stdout.buffer.write(b"X-Sendfile: " + root + b"/../sendable/" + name +
                        b"\r\nContent-Type: text/x-sent\r\n\r\nnot this body")
