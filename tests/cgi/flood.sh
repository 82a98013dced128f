#!/bin/sh
# $QUERY_STRING bytes of zeros (forever without a query string)
printf 'Content-Type: application/octet-stream\r\n\r\n'
if [ -n "$QUERY_STRING" ]; then exec head -c "$QUERY_STRING" /dev/zero; fi
exec cat /dev/zero
