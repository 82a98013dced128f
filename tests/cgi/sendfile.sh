#!/bin/sh
# X-Sendfile: the path in the query string; the body the script writes is not sent
printf 'X-Sendfile: %s\r\nContent-Type: text/x-sent\r\n\r\nnot this body' "$QUERY_STRING"
