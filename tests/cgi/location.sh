#!/bin/sh
# Location: whatever the query string says (a URL, or a local path)
printf 'Location: %s\r\n\r\n' "$QUERY_STRING"
