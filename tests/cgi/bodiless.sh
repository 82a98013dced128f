#!/bin/sh
# Answers with the status its query names (204, 304 ...) and a body all the same,
# which a server must not pass on after such a status.
printf 'Status: %s\r\nContent-Type: text/plain\r\n\r\n' "$QUERY_STRING"
echo "a body no client may see"
